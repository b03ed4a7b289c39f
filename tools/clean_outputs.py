"""Keep the notebooks' committed outputs small and free of machine noise (run by `make check-clean`, before `nbdev_clean`).

For every notebook named (default: nbs/*.ipynb; a folder means its notebooks):

- figures are stored small: no wider than MAX_WIDTH px, on the page's white, then as a COLOURS-colour palette PNG
  (lossless for line plots, which use few colours) or, where that is smaller, as a JPEG of quality JPEG_QUALITY (photo
  grids: a palette bands them and costs more). Both display in Jupyter and in the offline docs (nbconvert). A figure
  already stored so is left as it is, so the loss happens once;
- stderr streams (progress bars, library warnings) are dropped, and so are the outputs of `show_doc(...)` cells
  (nbdev's docs build renders them again from the code, so committing them only duplicates the docstrings); an
  output that still names a path of this machine is an error, to be fixed where it is printed;
- the notebook is written as Jupyter writes it (nbformat: sources and text outputs as lists of lines, keys sorted),
  consecutive stream outputs of one name joined (as JupyterLab shows them), and with this project's kernel
  (`make install` registers it as python3), so that opening and saving a notebook in JupyterLab changes nothing that
  this tool and `nbdev_clean` do not change back.

Idempotent: a second run changes nothing, so `make check-clean` can tell whether it was run. It then prints each
notebook's bytes (figures' share) and warns when the notebooks of a folder exceed MAX_BYTES (`--strict`: fails)."""
import argparse, base64, io, json, re, sys
from pathlib import Path
import nbformat
from nbformat.v4.rwbase import rejoin_lines, split_lines, strip_transient
from PIL import Image

MAX_WIDTH = 1100        # px
COLOURS = 64            # palette of a PNG figure: antialiased lines and text stay smooth (256 colours made them ~35% larger)
JPEG_QUALITY = 85
MAX_BYTES = 1_000_000   # the notebooks of nbs/, together
KERNELSPEC = {'display_name': 'python3', 'language': 'python', 'name': 'python3'}   # as nbdev_clean writes `make install`'s kernel
MACHINE_PATH = re.compile(r'(?<![\w.])(/(?:home|root|work|tmp|Users|scratch)/[^\s"\'\\]+)')
FIGURES = ('image/png', 'image/jpeg')

def _done(mime:str, im:Image.Image)->bool:
    "Whether a figure is already stored as this tool stores it (re-encoding it would only lose more)."
    if im.width > MAX_WIDTH: return False
    return mime == 'image/jpeg' or (im.mode == 'P' and im.getcolors(COLOURS) is not None)

def _encode(im:Image.Image, fmt:str)->bytes:
    buf = io.BytesIO()
    if fmt == 'PNG': im.quantize(COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(buf, format='PNG', optimize=True)
    else: im.save(buf, format='JPEG', quality=JPEG_QUALITY, optimize=True)
    return buf.getvalue()

def shrink_figure(mime:str, b64:str)->tuple:
    "(mime, base64) of the smaller of a palette PNG and a JPEG of the same figure (width cap), or the input when neither is smaller."
    im = Image.open(io.BytesIO(base64.b64decode(b64)))
    if _done(mime, im): return mime, b64
    im = Image.alpha_composite(Image.new('RGBA', im.size, 'white'), im.convert('RGBA')).convert('RGB')  # on the page's white
    if im.width > MAX_WIDTH: im = im.resize((MAX_WIDTH, round(im.height * MAX_WIDTH / im.width)), Image.LANCZOS)
    best = min([('image/png', _encode(im, 'PNG')), ('image/jpeg', _encode(im, 'JPEG'))], key=lambda x: len(x[1]))
    out = base64.b64encode(best[1]).decode()
    return (best[0], out) if len(out) < len(b64) else (mime, b64)

def _shrink_output(o:dict):
    "The output's figure, smaller (its mime type may change: PNG -> JPEG), in place."
    data, meta = o.get('data', {}), o.get('metadata', {})
    for mime in FIGURES:
        if mime not in data: continue
        new, b64 = shrink_figure(mime, data[mime].strip())   # one string, no trailing newline (as nbdev_clean writes it)
        o['data'] = {(new if k == mime else k): (b64 if k == mime else v) for k, v in data.items()}
        if mime in meta: meta[new] = meta.pop(mime)
        return

def _join_streams(outs:list)->list:
    "Consecutive stream outputs of one name as one (what JupyterLab shows, and may save)."
    res = []
    for o in outs:
        if res and o['output_type'] == 'stream' and res[-1]['output_type'] == 'stream' and res[-1]['name'] == o['name']:
            res[-1]['text'] += o['text']
        else: res.append(o)
    return res

def clean(path:Path)->list:
    "Clean one notebook in place; returns the machine paths still found in its outputs."
    nb = rejoin_lines(nbformat.from_dict(json.loads(path.read_text())))   # multi-line text as strings, as nbformat reads it
    found = []
    for c in nb['cells']:
        outs = [o for o in c.get('outputs', []) if not (o['output_type'] == 'stream' and o.get('name') == 'stderr')]
        if c['source'].lstrip().startswith('show_doc('): outs = []   # re-rendered by the docs build
        for o in outs:
            _shrink_output(o)
            data = o.get('data', {})
            text = json.dumps({k: v for k, v in o.items() if k != 'data'} | {k: v for k, v in data.items() if not k.startswith('image/')})
            found += [f"{path.name}: cell {c.get('id')}: {m}" for m in MACHINE_PATH.findall(text)]
        if 'outputs' in c: c['outputs'] = _join_streams(outs)
    nb.metadata['kernelspec'] = dict(KERNELSPEC)
    split_lines(strip_transient(nb))                                        # as nbformat (Jupyter) writes it
    path.write_text(json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + '\n')
    return found

def figure_bytes(path:Path)->int:
    "Bytes of a notebook's figures (base64, as stored)."
    outs = [o for c in json.loads(path.read_text())['cells'] for o in c.get('outputs', [])]
    return sum(len(''.join(v)) for o in outs for k, v in o.get('data', {}).items() if k.startswith('image/'))

def size_report(nbs:list, before:dict, max_bytes:int=MAX_BYTES)->tuple:
    "(lines: each notebook's bytes before -> after and its figures' share, then the total; whether the total is over max_bytes)."
    lines, total = [], 0
    for p in nbs:
        n = p.stat().st_size; total += n
        lines.append(f'{p.name:>24} {before[p]:>9,} -> {n:>9,} bytes (figures {figure_bytes(p):>7,})')
    over = total > max_bytes
    lines.append(f"{'all':>24} {sum(before.values()):>9,} -> {total:>9,} bytes" +
                 (f': over the {max_bytes:,} allowed' if over else f' (at most {max_bytes:,})'))
    return lines, over

def notebooks(paths:list)->list:
    "The notebooks named: files as they are, folders as their *.ipynb (not checkpoints)."
    return [q for p in map(Path, paths) for q in (sorted(p.glob('*.ipynb')) if p.is_dir() else [p])]

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('paths', nargs='*', default=['nbs'], help='notebooks or folders of notebooks (default: nbs)')
    ap.add_argument('--max-bytes', type=int, default=MAX_BYTES, help='the notebooks of the paths together (default: %(default)s)')
    ap.add_argument('--strict', action='store_true', help='fail (exit status 1) when they are larger, rather than warn')
    a = ap.parse_args(argv)
    nbs = notebooks(a.paths)
    before = {p: p.stat().st_size for p in nbs}
    found = [f for p in nbs for f in clean(p)]
    lines, over = size_report(nbs, before, a.max_bytes)
    print('\n'.join(lines))
    if found: sys.exit('outputs name paths of this machine (print them relative to the run or data folder):\n' + '\n'.join(found))
    if over:
        msg = (f"{', '.join(a.paths)}: the notebooks hold more than {a.max_bytes:,} bytes; their figures are as small as this "
               "tool makes them: make outputs smaller where they are made (fewer or smaller figures, shorter printouts)")
        if a.strict: sys.exit(msg)
        print('warning: ' + msg, file=sys.stderr)

if __name__ == '__main__': main()
