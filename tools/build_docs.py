"""Offline docs build (`make docs`), for machines without Quarto: the same steps as `nbdev_docs` up to Quarto
(`refresh_quarto_yml`, `_build_modidx`, `nbdev_sidebar`, `proc_nbs`), then the pages rendered and checked by
tools/docs_site.py (its docstring says how and why) into `_site/`, and README.md written from nbs/index.ipynb (as
`nbdev_readme` would, with its notebook links made to work from the repository root: `nbs/00_data.ipynb`).

Fails (exit status 1, every problem listed) when a notebook has no page, a notebook holds an error output, a page
has a broken local link or shows text a reader should not see (front matter, `#|` options, prompts, raw math,
progress bars, machine paths), or README.md links to a file the repository does not have.
Where Quarto exists, `nbdev_docs` builds the published site (.github/workflows/deploy.yaml does so on GitHub);
elsewhere `make install`'s stand-in .venv/bin/quarto (tools/quarto_stand_in.sh) keeps nbdev from running its installer
(`sudo`, then a re-install of the package) and stops it with one line."""
import json, re, shutil, sys, time
from pathlib import Path
import nbformat
from nbconvert import HTMLExporter, MarkdownExporter
from nbconvert.filters.markdown_mistune import markdown2html_mistune
from nbdev.config import get_config
from nbdev.quarto import proc_nbs, refresh_quarto_yml, nbdev_sidebar
from nbdev.doclinks import _build_modidx
sys.path.insert(0, str(Path(__file__).parent))
import docs_site as ds

def _exporter()->HTMLExporter:
    e = HTMLExporter(template_name=ds.TEMPLATE_DIR.name, extra_template_basedirs=[str(ds.TEMPLATE_DIR.parent)])
    e.exclude_input_prompt = e.exclude_output_prompt = True
    return e

def _lab_css(e:HTMLExporter)->str:
    "JupyterLab's stylesheet (what the `lab` template inlines into every page), written once as lab.css."
    env = e.environment
    return '\n'.join(env.loader.get_source(env, f'static/{n}')[0] for n in ('index.css', 'theme-light.css'))

def _plain(md:str)->str: return re.sub(r'[`*_]', '', md)

def _pages(nbs:Path, proc:Path)->list:
    "Every notebook's page (file, title, description), in sidebar.yml's order; notebooks it does not list follow."
    listed = ds.sidebar_notebooks((nbs/'sidebar.yml').read_text()) if (nbs/'sidebar.yml').exists() else []
    names = listed + sorted(p.name for p in proc.glob('*.ipynb') if p.name not in listed)
    res = []
    for n in names:
        if not (proc/n).exists(): continue
        fm = ds.front_matter(json.loads((proc/n).read_text()))
        res.append(dict(nb=n, page=ds.page_name(n, fm), title=str(fm.get('title') or Path(n).stem),
                        description=str(fm.get('description') or '')))
    return res

def build_site(cfg, proc:Path, site:Path)->dict:
    "Render every processed notebook into `site`; returns numbers for the summary line."
    pages = _pages(cfg.nbs_path, proc)
    page_of = {p['nb']: p['page'] for p in pages}
    base = cfg.get('doc_baseurl', '').strip('/')
    site_url = cfg.doc_host.rstrip('/') + '/' + (f'{base}/' if base else '') if cfg.get('doc_host') else ''
    e, search, n_math = _exporter(), [], 0
    for p in pages:
        nb = json.loads((proc/p['nb']).read_text())
        _, nb = ds.prepare_notebook(nb)
        node = nbformat.reads(json.dumps(nb), as_version=4)
        node.metadata['title'] = p['title'] if p['title'] == cfg.title else f"{p['title']} – {cfg.title}"
        desc = markdown2html_mistune(p['description']) if p['description'] else ''
        body, _ = e.from_notebook_node(node, resources={'site': dict(
            title=p['title'], description=desc, description_text=_plain(p['description']))})
        out, entries = ds.postprocess(body, p['page'], pages, page_of, site_url, cfg.title)
        n_math += out.count('<math ')
        (site/p['page']).write_text(out)
        search += entries
    (site/'lab.css').write_text(_lab_css(e))
    for f in ('site.css', 'site.js'): shutil.copy(ds.TEMPLATE_DIR/f, site/f)
    styles = cfg.nbs_path/'styles.css'
    (site/'styles.css').write_text(styles.read_text() if styles.exists() else '')
    (site/'search.js').write_text('window.SITE_SEARCH = ' + json.dumps(search, ensure_ascii=False) + ';\n')
    return dict(pages=len(pages), math=n_math, search_entries=len(search))

def write_readme(cfg, proc:Path)->list:
    "README.md from the processed home page; returns its relative links that name no file of the repository."
    root = cfg.config_path
    _, nb = ds.prepare_notebook(json.loads((proc/cfg.readme_nb).read_text()))
    md, _ = MarkdownExporter().from_notebook_node(nbformat.reads(json.dumps(nb), as_version=4))
    md = ds.readme_links(md.strip(), cfg.nbs_path.relative_to(root).as_posix())
    text = f'# {cfg.title}\n\n{md}\n\n<!-- generated from nbs/{cfg.readme_nb} by `make docs`; edit the notebook -->\n'
    (root/'README.md').write_text(text)
    return ds.broken_readme_links(text, root)

def error_outputs(proc:Path)->list:
    return [f"{p.name}: {o.get('ename')}: {o.get('evalue')}" for p in sorted(proc.glob('*.ipynb'))
            for c in json.loads(p.read_text())['cells'] for o in c.get('outputs', []) if o.get('output_type') == 'error']

def main():
    t0 = time.time()
    cfg = get_config()
    root, nbs = cfg.config_path, cfg.nbs_path
    # what nbdev_docs does before Quarto (nbdev.quarto._pre_docs)
    refresh_quarto_yml()
    _build_modidx()
    nbdev_sidebar.__wrapped__(path=nbs)
    proc = proc_nbs(nbs, n_workers=0, force=True)
    expected = sorted(p.name for p in nbs.glob('*.ipynb') if not p.name.startswith(('_', '.')))
    missing = sorted(set(expected) - {p.name for p in proc.glob('*.ipynb')})
    if missing: sys.exit(f'docs: nbdev processing produced no page for {missing} (expected every notebook in {nbs})')
    if bad := error_outputs(proc): sys.exit('docs: notebooks hold error outputs (re-execute them):\n' + '\n'.join(bad))
    site = root/'_site'
    shutil.rmtree(site, ignore_errors=True); site.mkdir()
    n = build_site(cfg, proc, site)
    stats = {}
    home = str(Path.home())
    problems = [m for nb in sorted(nbs.glob('*.ipynb')) for m in ds.hidden_show_docs(json.loads(nb.read_text()), nb.name)]
    problems += ds.check_site(site, forbidden_paths=[str(root)] + ([home] if home.count('/') > 1 else []), stats=stats)
    problems += [f'README.md: link to {u}: no such file in the repository' for u in write_readme(cfg, proc)]
    if problems: sys.exit(f'docs: {len(problems)} problems in the built site ({site.relative_to(root)}/):\n' + '\n'.join(problems))
    size = sum(f.stat().st_size for f in site.iterdir()) / 1e6
    print(f"docs: {n['pages']} pages in {site.relative_to(root)}/ ({size:.1f} MB; {stats.get('local_links', 0)} local links "
          f"and anchors resolve; {n['math']} formulas as MathML; {n['search_entries']} search entries; {time.time()-t0:.0f} s); "
          f"README.md written from {nbs.relative_to(root)}/{cfg.readme_nb}")

if __name__ == '__main__': main()
