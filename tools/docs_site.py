"""The offline docs site: nbdev's processed notebooks (`_proc/`, written by `proc_nbs`) as HTML pages a person can use
without Quarto and without a network, and the checks that fail the build when a page is not.

How, and why this way:

1. **Notebook level** (`prepare_notebook`): what Quarto would do with the processed notebook, done on the notebook's
   structure rather than on HTML. The front-matter raw cell nbdev adds becomes the page's title block, file name
   (`output-file`) and `<title>`; `#|` cell options get Quarto's meaning (`include: false`/nbdev `hide` drop the
   cell, `echo: false` hides the source, `output: false` the outputs, `output: asis` turns markdown outputs, such
   as `show_doc`'s, into markdown) and the option lines are not shown; Pandoc link attributes
   (`[source](url){target="_blank" style=...}`) become HTML attributes; stderr streams, progress bars and
   `IProgress not found` warnings are dropped.
2. **nbconvert** with a small template (`tools/docs_template/`, extending JupyterLab's `lab`): no In/Out prompts,
   nothing loaded from a CDN, the stylesheet written once (`lab.css`) instead of inlined into every page.
3. **HTML level** (`postprocess`, BeautifulSoup, which nbconvert already depends on, so no new dependency): heading
   ids made Pandoc's (`#subject.images`, the anchors nbdev's `_modidx` links use), links to the published site
   (`doc_host` + `doc_baseurl`) and to notebooks (`00_data.ipynb`) made relative links to the local pages,
   `$...$` math rendered to MathML with latex2mathml (browsers render MathML natively; nothing to ship or fetch),
   and the sidebar (every page with its title, in `sidebar.yml` order, this page's sections) and prev/next links.
4. **Checks** (`check_site`): every local link and fragment resolves; no page shows front matter, `#|` options,
   Pandoc attributes, prompts, raw math, progress bars, machine paths, or loads anything from the network.

A regex pass over nbconvert's HTML would be shorter but would have to re-find cells and outputs that the notebook
already names; a full custom template would have to re-implement nbconvert's output rendering. This keeps each job
where its input is structured."""
import html, re
from pathlib import Path
from urllib.parse import urlsplit
import yaml
from bs4 import BeautifulSoup, NavigableString, Tag

TEMPLATE_DIR = Path(__file__).parent/'docs_template'
HEADINGS = ['h1', 'h2', 'h3', 'h4', 'h5', 'h6']
HIDDEN_TAGS = ('pre', 'code', 'script', 'style', 'math', 'textarea')   # text that is never prose

# ---------------------------------------------------------------------------------------------------- notebook level
_OPTION = re.compile(r'^\s*#\|\s?(.*)$')

def parse_options(source:str)->tuple:
    "The `#|` options at the top of a code cell -> ({name: value}, the source without them), as Quarto reads them."
    lines, opts, i = source.splitlines(), {}, 0
    while i < len(lines) and (m := _OPTION.match(lines[i])):
        body = m.group(1).strip()
        if re.match(r'^[\w-]+\s*:', body):                       # Quarto: `#| echo: false`
            k, v = body.split(':', 1)
            try: opts[k.strip()] = yaml.safe_load(v) if v.strip() else True
            except yaml.YAMLError: opts[k.strip()] = v.strip()
        elif body:                                               # nbdev: `#| hide`, `#| export`, `#| default_exp core`
            k, *rest = body.split(None, 1)
            opts[k] = rest[0] if rest else True
        i += 1
    return opts, '\n'.join(lines[i:])

def front_matter(nb:dict)->dict:
    "The Quarto front matter nbdev's `proc_nbs` puts in the notebook's first raw cell; that cell is removed."
    cells = nb.get('cells', [])
    if cells and cells[0]['cell_type'] == 'raw':
        src = _text(cells[0]['source']).strip()
        m = re.match(r'^---\s*\n(.*?)\n---\s*$', src, re.S)
        if m:
            del cells[0]
            return yaml.safe_load(m.group(1)) or {}
    return {}

def _text(x)->str: return ''.join(x) if isinstance(x, list) else (x or '')

_PANDOC_LINK = re.compile(r'\[([^\]\n]*)\]\(([^)\s]+)\)\{([^}\n]*)\}')
_ATTR = re.compile(r'([\w-]+)="([^"]*)"|\.([\w-]+)|#([\w-]+)')

def pandoc_links(md:str)->str:
    """`[text](url){key="v" .class}` (Pandoc link attributes, as nbdev's show_doc writes) -> an HTML `<a>`."""
    def _a(m):
        attrs, classes = {'href': m.group(2)}, []
        for k, v, cls, ident in _ATTR.findall(m.group(3)):
            if k: attrs[k] = v
            elif cls: classes.append(cls)
            elif ident: attrs['id'] = ident
        if m.group(1) == 'source' and 'style' in attrs: classes.append('source-link'); del attrs['style']  # site.css
        if attrs.get('target') == '_blank': attrs['rel'] = 'noopener'
        if classes: attrs['class'] = ' '.join(classes)
        return '<a ' + ' '.join(f'{k}="{html.escape(v)}"' for k, v in attrs.items()) + f'>{m.group(1)}</a>'
    return _PANDOC_LINK.sub(_a, md)

_TQDM_LINE = re.compile(r'^.*(\d+%\|.*\|\s*\d+(\.\d+)?[kMG]?/\d+|IProgress not found|it/s\]|s/it\]).*$\n?', re.M)
WIDGET = 'application/vnd.jupyter.widget-view+json'

def clean_outputs(outputs:list)->list:
    "Outputs without stderr streams, progress bars (tqdm lines, widgets) or `IProgress not found` warnings."
    res = []
    for o in outputs:
        if o.get('output_type') == 'stream':
            if o.get('name') == 'stderr': continue
            text = '\n'.join(l.rsplit('\r', 1)[-1] for l in _text(o.get('text')).split('\n'))   # what a terminal shows
            text = _TQDM_LINE.sub('', text)
            if text.strip(): res.append({**o, 'text': text})
            continue
        data = o.get('data', {})
        if WIDGET in data or 'IProgress not found' in _text(data.get('text/plain')): continue
        res.append(o)
    return res

def _md_cell(source:str, id:str)->dict: return {'cell_type': 'markdown', 'id': id, 'metadata': {}, 'source': source}

def asis_markdown(outputs:list)->list:
    "The outputs of an `output: asis` cell as the markdown Quarto would insert into the page."
    res = []
    for o in outputs:
        if o.get('output_type') == 'stream': res.append(_text(o.get('text')))
        elif 'data' in o:
            d = o['data']
            res.append(_text(d.get('text/markdown') or d.get('text/html') or d.get('text/plain')))
    return [s for s in res if s.strip()]

def prepare_notebook(nb:dict)->tuple:
    "(front matter, cells as Quarto would show them) of a notebook processed by nbdev's `proc_nbs`."
    fm = front_matter(nb)
    cells = []
    for c in nb['cells']:
        if c['cell_type'] == 'markdown':
            src = _text(c['source'])
            if src.strip() == '<!-- WARNING: THIS FILE WAS AUTOGENERATED! DO NOT EDIT! -->': continue
            cells.append({**c, 'source': pandoc_links(src)})
            continue
        if c['cell_type'] != 'code': cells.append(c); continue
        opts, src = parse_options(_text(c['source']))
        if opts.get('hide') is True or opts.get('include') is False: continue
        outs = clean_outputs(c.get('outputs', []))
        if opts.get('output') is False: outs = []
        if opts.get('output') == 'asis':
            if opts.get('echo') is not False and src.strip(): cells.append({**c, 'source': src, 'outputs': []})
            cells += [_md_cell(pandoc_links(s), f"{c.get('id', 'cell')}-asis{k}") for k, s in enumerate(asis_markdown(outs))]
            continue
        meta = dict(c.get('metadata', {}))
        if opts.get('echo') is False: meta['transient'] = {'remove_source': True}
        if not outs and (opts.get('echo') is False or not src.strip()): continue     # nothing to show
        cells.append({**c, 'metadata': meta, 'source': src, 'outputs': outs})
    return fm, {**nb, 'cells': cells}

_SHOW_DOC_LINE = re.compile(r'^show_doc\((.+)\)\s*$', re.M)

def hidden_show_docs(nb:dict, name:str='')->list:
    "`show_doc` calls that no page shows: in a cell with several, only the last one's result is the cell's output."
    res = []
    for c in nb['cells']:
        calls = _SHOW_DOC_LINE.findall(_text(c['source'])) if c['cell_type'] == 'code' else []
        if len(calls) > 1:
            res.append(f"{name}: cell {c.get('id', '?')} calls show_doc {len(calls)} times; only show_doc({calls[-1]}) "
                       f"is shown, not {', '.join(calls[:-1])}: give each show_doc its own cell")
    return res

def page_name(nb_name:str, fm:dict=None)->str:
    "The HTML page of a notebook: its front matter's `output-file`, else nbdev's rule (`00_data.ipynb` -> data.html)."
    if fm and fm.get('output-file'): return fm['output-file']
    return re.sub(r'^\d+[a-zA-Z0-9]*_', '', Path(nb_name).stem.lower()) + '.html'

def sidebar_notebooks(sidebar_yml:str)->list:
    "The notebooks a Quarto `sidebar.yml` lists, in order (sections flattened)."
    def _walk(items):
        for it in items or []:
            if isinstance(it, str): yield it
            elif isinstance(it, dict):
                if 'href' in it: yield it['href']
                yield from _walk(it.get('contents'))
    d = yaml.safe_load(sidebar_yml) or {}
    return [p for p in _walk(d.get('website', {}).get('sidebar', {}).get('contents')) if p.endswith('.ipynb')]

# -------------------------------------------------------------------------------------------------------- HTML level
def pandoc_id(text:str)->str:
    "Pandoc's automatic identifier of a heading (what Quarto writes, and what nbdev's doc links point at)."
    s = ''.join(ch for ch in text if ch.isalnum() or ch in '_-. \n\t')
    s = re.sub(r'\s+', '-', s.strip()).lower()
    s = re.sub(r'^[^a-z\u00c0-\uffff]+', '', s)      # up to the first letter
    return s or 'section'

def _heading_text(h:Tag)->str:
    return ''.join(s for s in h.find_all(string=True) if not (s.parent.name == 'a' and 'anchor-link' in s.parent.get('class', [])))

def set_heading_ids(soup:BeautifulSoup)->list:
    "Pandoc ids on every h1-h6 of the page (unique, `-1`, `-2` suffixes) -> [(level, id, text)] in order."
    seen, res = {t['id'] for t in soup.find_all(id=True) if t.name not in HEADINGS}, []
    for h in soup.find_all(HEADINGS):
        if 'title' in h.get('class', []): continue
        text = _heading_text(h).strip()
        base = pandoc_id(text); hid, n = base, 0
        while hid in seen: n += 1; hid = f'{base}-{n}'
        seen.add(hid); h['id'] = hid
        for a in h.find_all('a', class_='anchor-link'): a['href'] = f'#{hid}'
        res.append((int(h.name[1]), hid, text))
    return res

def local_href(href:str, page_of:dict, site_url:str)->str:
    "A link as it must be on the local site: published-site links and notebook links become relative page links."
    if site_url and href.startswith(site_url):
        rest = href[len(site_url):].lstrip('/') or 'index.html'
        path, _, frag = rest.partition('#')
        return (path or 'index.html') + (f'#{frag}' if frag else '')
    u = urlsplit(href)
    if not u.scheme and not u.netloc and u.path.endswith('.ipynb'):
        name = Path(u.path).name
        if name in page_of: return page_of[name] + (f'#{u.fragment}' if u.fragment else '')
    return href

# private_doc_link: nbdev's `add_links` links every backticked name of the `_modidx`, private helpers (`_fetch`) too,
# but nbdev documents no private name, and a Pandoc id never starts with `_`: such a link has no target on the Quarto
# site either. The offline site shows the name as code, unlinked.

_MATH = re.compile(r'\$\$(.+?)\$\$|(?<![\\$\w])\$(?=\S)([^$\n]+?)(?<=\S)\$(?![\w$])', re.S)

def render_math(soup:BeautifulSoup, where:str='')->int:
    "`$...$`/`$$...$$` in prose (markdown cells and outputs, the title block) -> MathML; returns how many."
    from latex2mathml.converter import convert
    n = 0
    for box in soup.select('.jp-RenderedMarkdown, .title-block'):
        for s in list(box.find_all(string=True)):
            if not _MATH.search(s) or any(p.name in HIDDEN_TAGS for p in s.parents): continue
            parts, last = [], 0
            for m in _MATH.finditer(s):
                tex, display = (m.group(1), 'block') if m.group(1) is not None else (m.group(2), 'inline')
                try:
                    mathml = convert(tex.strip(), display=display)
                    if m2 := re.search(r'>(\\[A-Za-z]+)<', mathml): raise ValueError(f'unknown command {m2.group(1)}')
                except Exception as e:
                    raise ValueError(f'{where}: cannot render the math ${tex}$ to MathML ({type(e).__name__}: {e}); '
                                     'write it in the LaTeX subset latex2mathml reads') from e
                parts += [NavigableString(s[last:m.start()]), BeautifulSoup(mathml, 'html.parser').math]
                last, n = m.end(), n + 1
            parts.append(NavigableString(s[last:]))
            for p in parts: s.insert_before(p)
            s.extract()
    return n

_CODE_LINK = re.compile(r'\[`?([^`\]\n]+)`?\]\(([^)\s]+)\)')

def code_links(soup:BeautifulSoup)->int:
    """Markdown links inside code blocks of prose -> links. nbdev's `add_links` also rewrites backticked names in the
    docments comments of `show_doc`'s signature block, where markdown is not rendered; returns how many."""
    n = 0
    for pre in soup.select('.jp-RenderedMarkdown pre'):
        for s in list(pre.find_all(string=_CODE_LINK)):
            parts, last = [], 0
            for m in _CODE_LINK.finditer(s):
                a = soup.new_tag('a', href=m.group(2)); a.string = m.group(1)
                parts += [NavigableString(s[last:m.start()]), a]; last = m.end(); n += 1
            parts.append(NavigableString(s[last:]))
            for p in parts: s.insert_before(p)
            s.extract()
    return n

def nav_html(pages:list, current:str, toc:list, site_title:str)->str:
    "The sidebar: site name, search box, every page by title (this one with its h2 sections)."
    items = []
    for p in pages:
        active = p['page'] == current
        sub = ''
        if active and toc:
            sub = '<ul class="page-toc">' + ''.join(f'<li><a href="#{hid}">{html.escape(t)}</a></li>'
                                                   for lvl, hid, t in toc if lvl == 2) + '</ul>'
        cls = ' class="active"' if active else ''
        items.append(f'<li{cls}><a href="{p["page"]}">{html.escape(p["title"])}</a>{sub}</li>')
    return (f'<p class="site-name"><a href="index.html">{html.escape(site_title)}</a></p>'
            '<input id="site-search" type="search" placeholder="Search the docs" aria-label="Search the docs">'
            '<ul id="search-results" class="search-results"></ul>'
            f'<ul class="site-nav">{"".join(items)}</ul>')

def footer_html(pages:list, current:str)->str:
    i = [p['page'] for p in pages].index(current)
    prev = f'<a href="{pages[i-1]["page"]}">&larr; {html.escape(pages[i-1]["title"])}</a>' if i > 0 else '<span></span>'
    nxt = f'<a href="{pages[i+1]["page"]}">{html.escape(pages[i+1]["title"])} &rarr;</a>' if i+1 < len(pages) else '<span></span>'
    return prev + nxt

def search_entries(soup:BeautifulSoup, page:str, title:str, max_chars:int=1500)->list:
    "One search entry per section of the page's prose: {p: page title, s: section, h: href, x: text}."
    entries, cur = [], {'p': title, 's': title, 'h': page, 'x': []}
    main = soup.find('main') or soup
    for el in main.descendants:
        if isinstance(el, Tag) and el.name in ('h1', 'h2', 'h3') and el.get('id') and 'title' not in el.get('class', []):
            entries.append(cur); cur = {'p': title, 's': _heading_text(el).strip(), 'h': f'{page}#{el["id"]}', 'x': []}
        elif isinstance(el, NavigableString):
            if any(p.name in ('script', 'style', 'math') or p.name in HEADINGS for p in el.parents): continue
            if not any('jp-RenderedMarkdown' in p.get('class', []) or 'title-block' in p.get('class', [])
                       for p in el.parents if isinstance(p, Tag)): continue
            cur['x'].append(str(el))
    entries.append(cur)
    for e in entries: e['x'] = re.sub(r'\s+', ' ', ' '.join(e['x'])).strip()[:max_chars]
    return [e for e in entries if e['x'] or e['s'] != title]

def postprocess(page_html:str, page:str, pages:list, page_of:dict, site_url:str, site_title:str)->tuple:
    "nbconvert's HTML of one page -> (final HTML, search entries). See the module docstring, step 3."
    soup = BeautifulSoup(page_html, 'html.parser')
    toc = set_heading_ids(soup)
    code_links(soup)
    for a in soup.find_all('a', href=True):
        href = local_href(a['href'], page_of, site_url)
        if href != a['href'] and urlsplit(href).fragment.startswith('_'): a.unwrap(); continue   # see private_doc_link
        a['href'] = href
    render_math(soup, page)
    title = next(p['title'] for p in pages if p['page'] == page)
    soup.find('nav', class_='site-sidebar').append(BeautifulSoup(nav_html(pages, page, toc, site_title), 'html.parser'))
    soup.find('footer', class_='site-footer').append(BeautifulSoup(footer_html(pages, page), 'html.parser'))
    return str(soup), search_entries(soup, page, title)

# ------------------------------------------------------------------------------------------------------------ checks
_FRONT_MATTER = re.compile(r'(^|\n)\s*---\s*\n?\s*(description|title|output-file)\s*:|\boutput-file\s*:\s*\S+\.html')
_DIRECTIVE_TEXT = re.compile(r'(^|\n)\s*#\|\s*[\w-]+|\b(echo|output|include)\s*:\s*(false|asis)\b')
_PANDOC_ATTR = re.compile(r'\)\{[^}\n]*(target|style|\.[\w-]+)\s*=?[^}\n]*\}|\{target=')
_PROMPT = re.compile(r'\b(In|Out)\s?\[\s*\d*\s*\]:')
_IN_MATH = r'(?:[^$\n]|\n(?![ \t]*\n))*'                    # one paragraph: line breaks, but no blank line
_RAW_MATH = re.compile(rf'(?<![\w$])\$(?=\S){_IN_MATH}[\\_^{{}}]{_IN_MATH}(?<=\S)\$(?![\w$])')
_RAW_LINK = re.compile(r'\[[^\]\n]*\]\((https?://|[\w./-]+\.(html|ipynb))[^)\s]*\)')   # markdown link left as text
_LIST_REPR = re.compile(r"\\n', '")                            # an output's lines shown as a Python list
_PROGRESS = re.compile(r'\d+%\|[^\n|]*\|\s*\d|IProgress not found')

def _is_local(url:str)->bool:
    u = urlsplit(url)
    return not u.scheme and not u.netloc and not url.startswith(('//', 'mailto:', 'data:', 'javascript:'))

def check_page(name:str, page_html:str, exists, ids_of, forbidden_paths=(), stats=None)->list:
    """Problems of one built page: `exists(path)` says whether a site file exists, `ids_of(page)` the element ids of a
    page. Returns messages naming the page and what was found; counts the local links it checked in `stats`."""
    soup = BeautifulSoup(page_html, 'html.parser')
    probs, stats = [], stats if stats is not None else {}
    own_ids = ids_of(name)
    for el in soup.find_all(['a', 'link', 'script', 'img', 'iframe', 'source']):
        attr = 'href' if el.name in ('a', 'link') else 'src'
        url = el.get(attr)
        if not url: continue
        if el.name in ('link', 'script', 'iframe', 'source') and not _is_local(url):
            probs.append(f'{name}: loads {url} from the network (<{el.name}>); the offline site must not')
            continue
        if not _is_local(url): continue
        stats['local_links'] = stats.get('local_links', 0) + 1
        u = urlsplit(url)
        target = u.path or name
        if not exists(target): probs.append(f'{name}: link to {url}: no file {target} in the site'); continue
        if u.fragment and target.endswith('.html') and u.fragment not in (own_ids if target == name else ids_of(target)):
            probs.append(f'{name}: link to {url}: {target} has no element with id "{u.fragment}"')
    body = soup.find('body') or soup
    visible = '\n'.join(s for s in body.find_all(string=True) if s.parent.name not in ('script', 'style'))
    prose = [s for s in body.find_all(string=True) if not any(p.name in HIDDEN_TAGS for p in s.parents)]
    for pat, what in [(_FRONT_MATTER, 'Quarto front matter'), (_DIRECTIVE_TEXT, 'cell option (#| directive) text'),
                      (_PANDOC_ATTR, 'Pandoc attribute text'), (_PROMPT, 'an In/Out prompt'),
                      (_PROGRESS, 'progress-bar output'), (_LIST_REPR, "an output's lines as a Python list"),
                      (_RAW_LINK, 'markdown link text')]:
        if m := pat.search(visible): probs.append(f'{name}: shows {what}: {m.group(0).strip()[:80]!r}')
    # each text node alone: markdown keeps a paragraph's line breaks in its text, and `$...$` across one is not rendered
    if m := next(filter(None, map(_RAW_MATH.search, prose)), None):
        probs.append(f'{name}: shows unrendered math: {m.group(0)[:80]!r}' +
                     ('; keep each $...$ on one line of the markdown' if '\n' in m.group(0) else ''))
    for p in forbidden_paths:
        if p and p in page_html: probs.append(f'{name}: names the machine path {p}')
    return probs

def check_site(site:Path, forbidden_paths=(), stats=None)->list:
    "Problems of every page of a built site (see `check_page`); an empty list when the site is usable offline."
    site = Path(site)
    pages = sorted(site.glob('*.html'))
    texts = {p.name: p.read_text() for p in pages}
    _ids = {}
    def ids_of(page):
        if page not in _ids:
            _ids[page] = {t['id'] for t in BeautifulSoup(texts[page], 'html.parser').find_all(id=True)} if page in texts else set()
        return _ids[page]
    exists = lambda rel: (site/rel).is_file()
    where = {}                                   # one line per problem, naming the pages (and times) it occurs in
    for p in pages:
        for msg in check_page(p.name, texts[p.name], exists, ids_of, forbidden_paths, stats):
            where.setdefault(msg.split(': ', 1)[1], []).append(p.name)
    def _pages(names): return ', '.join(n + (f' (x{names.count(n)})' if names.count(n) > 1 else '') for n in dict.fromkeys(names))
    return [f'{_pages(names)}: {body}' for body, names in where.items()]

# ------------------------------------------------------------------------------------------------------------ README
_NB_LINK = re.compile(r'(\]\(\s*|href=["\'])(?!\w+:|/|#)([^)"\'\s#]+\.ipynb)')

def readme_links(md:str, nbs_rel:str='nbs')->str:
    "Relative notebook links of the home page (`00_data.ipynb`) as links from the repository root (`nbs/00_data.ipynb`)."
    return _NB_LINK.sub(lambda m: f'{m.group(1)}{nbs_rel}/{m.group(2)}', md)

_MD_LINK = re.compile(r'\]\(\s*([^)\s]+)[^)]*\)|(?:href|src)=["\']([^"\']+)["\']')

def broken_readme_links(md:str, root:Path)->list:
    "Relative links of README.md that name no file of the repository (as a code host resolves them)."
    res = []
    for m in _MD_LINK.finditer(md):
        url = m.group(1) or m.group(2)
        if not _is_local(url) or url.startswith('#'): continue
        path = urlsplit(url).path
        if path and not (Path(root)/path).exists(): res.append(url)
    return res
