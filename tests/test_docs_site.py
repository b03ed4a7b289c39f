"""The offline docs site (tools/docs_site.py, tools/build_docs.py) on small inputs written here: Quarto's cell options
and nbdev's front matter, links made local, math as MathML, the sidebar from every notebook, the README's links,
and the checks that fail `make docs`, each shown failing on a page that has the problem. `make docs` runs the same
checks over the real site (CI: .ci/run)."""
import json, sys
from pathlib import Path
import pytest, yaml

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT/'tools'))
import docs_site as ds
import build_docs as bd

SITE_URL = 'https://secondsight.github.io/secondsight/'

def code(src, outputs=(), id='c'): return dict(cell_type='code', id=id, metadata={}, execution_count=None, source=src, outputs=list(outputs))
def md(src, id='m'): return dict(cell_type='markdown', id=id, metadata={}, source=src)
def stream(name, text): return dict(output_type='stream', name=name, text=text)
def result(**data): return dict(output_type='execute_result', execution_count=1, metadata={}, data=data)
def notebook(cells): return dict(cells=cells, metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}},
                                 nbformat=4, nbformat_minor=5)
FRONT = dict(cell_type='raw', id='fm', metadata={},
             source='---\ndescription: What $x_i$ means\noutput-file: data.html\ntitle: \'Data: the NSD layer\'\n---\n\n')
SHOW_DOC_MD = ('---\n\n[source](https://github.com/secondsight/secondsight/blob/main/secondsight/data.py#L76)'
               '{target="_blank" style="float:right; font-size:smaller"}\n\n### nsd_path\n\n```python\ndef nsd_path(\n'
               '    root, # the root, see [`Subject`](https://secondsight.github.io/secondsight/data.html#subject)\n)->Path:\n```\n\n*Absolute path.*')

# ------------------------------------------------------------------------------------------------- notebook level
def test_cell_options_are_read_as_quarto_and_nbdev_do():
    opts, src = ds.parse_options('#| echo: false\n#| output: asis\n#|hide\n#| default_exp core\nshow_doc(f)\n#| not an option')
    assert opts == {'echo': False, 'output': 'asis', 'hide': True, 'default_exp': 'core'}
    assert src == 'show_doc(f)\n#| not an option'                   # options are read from the top only

def test_front_matter_becomes_page_metadata():
    nb = notebook([dict(FRONT), md('text')])
    fm = ds.front_matter(nb)
    assert fm == {'description': 'What $x_i$ means', 'output-file': 'data.html', 'title': 'Data: the NSD layer'}
    assert [c['cell_type'] for c in nb['cells']] == ['markdown']      # the raw cell is gone
    assert ds.front_matter(notebook([md('no front matter')])) == {}
    assert ds.page_name('00_data.ipynb', fm) == 'data.html' and ds.page_name('03_search.ipynb') == 'search.html'

def test_show_doc_cell_becomes_markdown_without_source_or_pandoc_attributes():
    nb = notebook([dict(FRONT), code('#| echo: false\n#| output: asis\nshow_doc(nsd_path)',
                                     [result(**{'text/markdown': SHOW_DOC_MD, 'text/plain': '<ShowDocRenderer>'})])])
    fm, out = ds.prepare_notebook(nb)
    assert fm['title'] == 'Data: the NSD layer'
    (cell,) = out['cells']
    assert cell['cell_type'] == 'markdown' and 'show_doc' not in cell['source'] and '#|' not in cell['source']
    assert '{target=' not in cell['source']
    assert '<a href="https://github.com/secondsight/secondsight/blob/main/secondsight/data.py#L76" target="_blank" rel="noopener" class="source-link">source</a>' in cell['source']

def test_hidden_cells_options_and_progress_noise_are_dropped():
    widget = dict(output_type='display_data', metadata={}, data={ds.WIDGET: {'model_id': 'x'}, 'text/plain': 'HBox()'})
    nb = notebook([
        code('#| hide\nsecret()', [stream('stdout', 'hidden\n')], id='a'),
        code('#| include: false\nsetup()', id='b'),
        code('#| echo: false\nplot()', [stream('stdout', 'shown\n')], id='c'),
        code('#| output: false\nquiet()', [stream('stdout', 'not shown\n')], id='d'),
        code('run()', [stream('stderr', '100%|##########| 40/40 [00:01<00:00, 30.0it/s]\n'),
                       stream('stdout', 'epoch 1\r  50%|#####     | 1/2 [00:01<00:01,  1.00s/it]\nresult: 0.42\n'),
                       stream('stdout', '  0%|          | 0/3 [00:00<?, ?it/s]\n'),
                       result(**{'text/plain': 'IProgress not found. Please update jupyter and ipywidgets.'}),
                       widget, result(**{'text/plain': '7'})], id='e')])
    _, out = ds.prepare_notebook(nb)
    cells = {c['id']: c for c in out['cells']}
    assert set(cells) == {'c', 'd', 'e'}
    assert cells['c']['metadata']['transient'] == {'remove_source': True} and cells['c']['source'] == 'plot()'
    assert cells['d']['outputs'] == [] and cells['d']['source'] == 'quiet()'
    assert [(o['output_type'], ds._text(o.get('text') or o['data']['text/plain'])) for o in cells['e']['outputs']] == [
        ('stream', 'result: 0.42\n'), ('execute_result', '7')]

def test_show_docs_sharing_a_cell_are_reported():
    nb = notebook([code('#| echo: false\n#| output: asis\nshow_doc(a)\nshow_doc(B.f)', id='x'), code('show_doc(c)')])
    (msg,) = ds.hidden_show_docs(nb, '00_core.ipynb')
    assert 'cell x' in msg and 'show_doc(B.f) is shown, not a' in msg and 'own cell' in msg

# ---------------------------------------------------------------------------------------------------- HTML level
def test_heading_ids_follow_pandoc():
    assert ds.pandoc_id('Subject.images') == 'subject.images'
    assert ds.pandoc_id('The NSD layout') == 'the-nsd-layout'
    assert ds.pandoc_id('Demo results (subject 1, make demo)') == 'demo-results-subject-1-make-demo'
    assert ds.pandoc_id('1. _fetch') == 'fetch' and ds.pandoc_id('!!') == 'section'

def test_links_to_the_published_site_and_to_notebooks_become_local():
    page_of = {'00_data.ipynb': 'data.html', 'index.ipynb': 'index.html'}
    assert ds.local_href(SITE_URL + 'data.html#subject', page_of, SITE_URL) == 'data.html#subject'
    assert ds.local_href(SITE_URL, page_of, SITE_URL) == 'index.html'
    assert ds.local_href('00_data.ipynb#readers', page_of, SITE_URL) == 'data.html#readers'
    for external in ['https://arxiv.org/abs/2306.00927', 'https://github.com/x/y/blob/main/nbs/00_data.ipynb', '#here']:
        assert ds.local_href(external, page_of, SITE_URL) == external

PAGE = """<html><head><title>t</title></head><body><nav class="site-sidebar"></nav><main>
<header class="title-block"><h1 class="title">Data</h1><div class="description jp-RenderedMarkdown"><p>About $x_i$</p></div></header>
<div class="jp-RenderedMarkdown"><h2 id="Intro">Intro<a class="anchor-link" href="#Intro">¶</a></h2>
<p>See <a href="00_data.ipynb">the data</a>, <a href="https://secondsight.github.io/secondsight/data.html#subject"><code>Subject</code></a>,
<a href="https://secondsight.github.io/secondsight/data.html#_fetch"><code>_fetch</code></a>;
strength $s_i = 0.92 - 0.30\\,((i+1)/n)^3$ costs $5 and <code>$HOME/$x_i$</code> is code.</p>
<pre><code># anything [`as_images`](https://secondsight.github.io/secondsight/core.html#as_images) accepts</code></pre>
<h3>Subject</h3></div><footer class="site-footer"></footer></main></body></html>"""
PAGES = [dict(nb='index.ipynb', page='index.html', title='secondsight'), dict(nb='00_data.ipynb', page='data.html', title='Data')]

def test_postprocess_makes_a_usable_page():
    out, entries = ds.postprocess(PAGE, 'data.html', PAGES, {p['nb']: p['page'] for p in PAGES}, SITE_URL, 'secondsight')
    assert 'id="intro"' in out and 'href="#intro"' in out and 'id="subject"' in out
    assert 'href="data.html"' in out and 'href="data.html#subject"' in out and 'href="core.html#as_images"' in out
    assert '_fetch' in out and 'data.html#_fetch' not in out           # a private name: shown as code, not linked
    assert out.count('<math') == 2 and '$s_i' not in out and 'About <math' in out
    assert '$5' in out and '$HOME/$x_i$' in out                        # a price and code stay as they are
    assert '<li class="active"><a href="data.html">Data</a><ul class="page-toc"><li><a href="#intro">Intro</a>' in out
    assert '← secondsight' in out                               # previous page in the footer
    assert {e['s'] for e in entries} >= {'Intro', 'Subject'} and all(e['h'].startswith('data.html') for e in entries)
    pages = {'data.html': out, 'index.html': '<html><body></body></html>', 'core.html': '<h3 id="as_images">as_images</h3>'}
    assert check(out, pages) == []

@pytest.mark.parametrize('tex, why', [('x^', 'MissingSuperScriptOrSubscriptError'), ('\\foo x', 'unknown command \\foo')])
def test_bad_math_names_the_page_and_formula(tex, why):
    with pytest.raises(ValueError, match='data.html: cannot render the math') as e:
        ds.postprocess(PAGE.replace('About $x_i$', f'About ${tex}$'), 'data.html', PAGES, {}, SITE_URL, 'secondsight')
    assert f'${tex}$' in str(e.value) and why in str(e.value)

# --------------------------------------------------------------------------------------------------------- checks
def check(page_html, pages, name='data.html', forbidden=()):
    from bs4 import BeautifulSoup
    ids = lambda p: {t['id'] for t in BeautifulSoup(pages.get(p, ''), 'html.parser').find_all(id=True)}
    return ds.check_page(name, page_html, lambda rel: rel in pages or rel.endswith('.css'), ids, forbidden)

GOOD = '<html><body><main><h2 id="readers">Readers</h2><p><a href="index.html">home</a> <a href="#readers">here</a></p></main></body></html>'

@pytest.mark.parametrize('bad, expected', [
    ('<a href="00_data.html">data</a>', 'no file 00_data.html in the site'),
    ('<a href="index.html#nowhere">x</a>', 'index.html has no element with id "nowhere"'),
    ('<a href="#gone">x</a>', 'data.html has no element with id "gone"'),
    ('<p>--- description: Readers for NSD output-file: data.html title: Data ---</p>', 'Quarto front matter'),
    ('<pre>#| echo: false\n#| output: asis\nshow_doc(nsd_path)</pre>', 'cell option (#| directive) text'),
    ('<p>source{target="_blank" style="float:right; font-size:smaller"}</p>', 'Pandoc attribute text'),
    ('<div>Out[0]:</div>', 'an In/Out prompt'),
    ('<p>for iteration $s_i = 0.92 - 0.30((i+1)/n)^3$</p>', 'unrendered math'),
    ('<li>keeps $g(f) = \\bar\\alpha_t P(f) / (\\bar\\alpha_t P(f) + 1 -\n  \\bar\\alpha_t)$ of it</li>', 'keep each $...$ on one line'),
    ('<pre>100%|##########| 40/40 [00:01&lt;00:00]</pre>', 'progress-bar output'),
    ('<pre>IProgress not found. Please update jupyter</pre>', 'progress-bar output'),
    ("<pre>['a\\n', 'b']</pre>", "an output's lines as a Python list"),
    ('<p>[`Subject`](https://secondsight.github.io/secondsight/data.html#subject)</p>', 'markdown link text'),
    ('<script src="https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/latest.js"></script>', 'from the network'),
    ('<pre>written to /work/main/runs/x.png</pre>', 'names the machine path /work/main'),
])
def test_checks_fail_on_each_problem(bad, expected):
    pages = {'data.html': GOOD, 'index.html': GOOD}
    assert check(GOOD, pages, forbidden=['/work/main']) == []
    page = GOOD.replace('</main>', bad + '</main>')
    probs = check(page, {**pages, 'data.html': page}, forbidden=['/work/main'])
    assert len(probs) == 1 and probs[0].startswith('data.html: ') and expected in probs[0], probs

def test_dollars_that_are_not_math_pass():
    page = GOOD.replace('</main>', '<p>costs $5 for x_i in one run,\nor $6 for two</p><p>x_1 $7</p><p>$ y_2</p></main>')
    assert check(page, {'data.html': page, 'index.html': GOOD}) == []

def test_check_site_reads_a_folder(tmp_path):
    (tmp_path/'index.html').write_text(GOOD.replace('index.html', 'data.html#readers'))
    (tmp_path/'data.html').write_text(GOOD.replace('index.html', 'missing.html'))
    stats = {}
    assert ds.check_site(tmp_path, stats=stats) == ['data.html: link to missing.html: no file missing.html in the site']
    assert stats['local_links'] == 4

# ----------------------------------------------------------------------------------------------- README, sidebar
def test_readme_links_work_from_the_repository_root(tmp_path):
    text = ('| [00_data](00_data.ipynb) | [the run](03_search.ipynb#the-run) | <a href="bench.ipynb">bench</a> |\n'
            '[paper](https://arxiv.org/abs/2306.00927) [`Subject`](https://secondsight.github.io/secondsight/data.html#subject) '
            '[top](#what-it-does) `nbs/03_search.ipynb`')
    out = ds.readme_links(text)
    assert '(nbs/00_data.ipynb)' in out and '(nbs/03_search.ipynb#the-run)' in out and 'href="nbs/bench.ipynb"' in out
    assert out.count('nbs/') == 4 and 'https://arxiv.org/abs/2306.00927' in out
    (tmp_path/'nbs').mkdir(); (tmp_path/'nbs'/'00_data.ipynb').write_text('{}'); (tmp_path/'nbs'/'03_search.ipynb').write_text('{}')
    assert ds.broken_readme_links(out, tmp_path) == ['nbs/bench.ipynb']
    assert ds.broken_readme_links(text, tmp_path) == ['00_data.ipynb', '03_search.ipynb#the-run', 'bench.ipynb']

def test_sidebar_lists_every_notebook_in_order(capsys):
    "nbdev_sidebar (run by `make docs` and `nbdev_docs`) lists every notebook, the home page first, a new one too."
    from nbdev.quarto import nbdev_sidebar
    nbdev_sidebar.__wrapped__(path=ROOT/'nbs', printit=True, force=True)
    listed = ds.sidebar_notebooks(capsys.readouterr().out)
    nbs = sorted(p.name for p in (ROOT/'nbs').glob('*.ipynb') if not p.name.startswith('_'))
    assert listed == ['index.ipynb'] + [n for n in nbs if n != 'index.ipynb']

def test_sections_in_sidebar_yml_are_flattened():
    y = yaml.safe_dump({'website': {'sidebar': {'contents': ['index.ipynb', {'section': 'api', 'href': 'api/index.ipynb',
                                                                              'contents': ['api/a.ipynb', 'styles.css']}]}}})
    assert ds.sidebar_notebooks(y) == ['index.ipynb', 'api/index.ipynb', 'api/a.ipynb']

# ------------------------------------------------------------------------------------------- build, end to end
class Cfg(dict):
    __getattr__ = dict.__getitem__

def test_build_site_end_to_end(tmp_path):
    "Two processed notebooks (as proc_nbs writes them) -> a site that passes every check, with a notebook not in sidebar.yml."
    proc, site, nbs = tmp_path/'_proc', tmp_path/'_site', tmp_path/'nbs'
    for d in (proc, site, nbs): d.mkdir()
    (nbs/'sidebar.yml').write_text(yaml.safe_dump({'website': {'sidebar': {'contents': ['index.ipynb', '00_data.ipynb']}}}))
    (nbs/'styles.css').write_text('.cell { margin-bottom: 1rem; }\n')
    index_fm = dict(FRONT, source='---\ntitle: secondsight\ndescription: Home\noutput-file: index.html\n---\n')
    (proc/'index.ipynb').write_text(json.dumps(notebook([index_fm, md('## Notebooks\n\n[00_data](00_data.ipynb), [06_slurm](06_slurm.ipynb)')])))
    (proc/'00_data.ipynb').write_text(json.dumps(notebook([dict(FRONT),
        md('## Readers\n\nstrength $s_i = 0.92 - 0.30\\,((i+1)/n)^3$', id='m1'),
        code('#| echo: false\n#| output: asis\nshow_doc(nsd_path)', [result(**{'text/markdown': SHOW_DOC_MD.replace('#subject', '#readers'), 'text/plain': 'x'})], id='c1'),
        code('x = 1\nx', [stream('stderr', '100%|####| 2/2 [00:00<00:00]\n'), result(**{'text/plain': '1', 'text/html': ['<table>\n', '<tr><td>1</td></tr>\n', '</table>']})], id='c2')])))
    fm6 = dict(FRONT, source='---\ntitle: SLURM\noutput-file: slurm.html\n---\n')
    (proc/'06_slurm.ipynb').write_text(json.dumps(notebook([fm6, md('## Arrays')])))
    cfg = Cfg(nbs_path=nbs, doc_host='https://secondsight.github.io', doc_baseurl='/secondsight', title='secondsight')
    n = bd.build_site(cfg, proc, site)
    assert n['pages'] == 3 and n['math'] == 2 and sorted(p.name for p in site.glob('*.html')) == ['data.html', 'index.html', 'slurm.html']
    assert ds.check_site(site) == []
    page = (site/'data.html').read_text()
    assert '<title>Data: the NSD layer – secondsight</title>' in page and '<h1 class="title">Data: the NSD layer</h1>' in page
    assert 'What <math' in page                                        # the description's math too
    assert 'show_doc' not in page and 'In [' not in page and 'Out[' not in page and '100%|' not in page
    assert "\\n', '" not in page and '<tr><td>1</td></tr>' in page    # multi-line outputs joined, not a list repr
    assert 'href="data.html#readers"' in page and 'cdnjs' not in page and 'require.min.js' not in page
    from bs4 import BeautifulSoup
    nav = BeautifulSoup(page, 'html.parser').select('ul.site-nav > li > a')
    assert [(a['href'], a.text) for a in nav] == [('index.html', 'secondsight'), ('data.html', 'Data: the NSD layer'),
                                                 ('slurm.html', 'SLURM')]   # sidebar order, then the unlisted notebook
    assert 'href="slurm.html"' in (site/'index.html').read_text()
    assert (site/'lab.css').stat().st_size > 50_000 and 'SITE_SEARCH' in (site/'search.js').read_text()

def test_math_across_a_line_break_is_caught(tmp_path):
    "nbconvert keeps a paragraph's line breaks in its text: a formula across one stays raw, and the site check says so."
    proc, site, nbs = tmp_path/'_proc', tmp_path/'_site', tmp_path/'nbs'
    for d in (proc, site, nbs): d.mkdir()
    broken = '- *img2img*: the fraction $g(f) = \\bar\\alpha_t P(f) / (\\bar\\alpha_t P(f) + 1 -\n  \\bar\\alpha_t)$ of each frequency'
    fixed = broken.replace('fraction $', 'fraction\n  $').replace('1 -\n  ', '1 - ')
    for name, text in [('00_data.ipynb', broken), ('06_slurm.ipynb', fixed)]:
        (proc/name).write_text(json.dumps(notebook([dict(FRONT, source=f'---\ntitle: {name}\noutput-file: {ds.page_name(name)}\n---\n'),
                                                    md('## Gain\n\n' + text)])))
    n = bd.build_site(Cfg(nbs_path=nbs, doc_host='', title='secondsight'), proc, site)
    assert n['math'] == 1                                               # the fixed formula only
    (msg,) = [m for m in ds.check_site(site) if 'math' in m]         # (no index.html here: its links are reported too)
    assert msg.startswith('data.html: shows unrendered math: ') and '$g(f)' in msg and 'one line of the markdown' in msg

def test_settings_match_a_github_pages_deploy():
    "doc_host/doc_baseurl are where .github/workflows/deploy.yaml (quarto-ghp: gh-pages branch) publishes git_url's repo."
    from configparser import ConfigParser
    c = ConfigParser(); c.read(ROOT/'settings.ini'); s = c['DEFAULT']
    assert s['git_url'] == f"https://github.com/{s['user']}/{s['repo']}"
    assert s['doc_host'] == f"https://{s['user']}.github.io" and s['doc_baseurl'] == f"/{s['repo']}"
    wf = ROOT/'.github'/'workflows'
    assert 'fastai/workflows/quarto-ghp@' in (wf/'deploy.yaml').read_text()
    assert 'fastai/workflows/nbdev-ci@' in (wf/'test.yaml').read_text()
