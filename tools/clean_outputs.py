"""Keep the notebooks' committed outputs small and free of machine noise (run by `make check-clean`, before `nbdev_clean`).

For every nbs/*.ipynb: PNG figures are re-encoded with a 256-colour palette (lossless for line plots, which use few
colours; photo grids lose a little colour depth) and no wider than MAX_WIDTH px; stderr streams (progress bars,
library warnings) are dropped, and so are the outputs of `show_doc(...)` cells (nbdev's docs build renders them again
from the code, so committing them only duplicates the docstrings); an output that still names a path of this machine is an error, to be fixed where it
is printed. Idempotent: a second run changes nothing, so `make check-clean` can tell whether it was run."""
import base64, io, json, re, sys
from pathlib import Path
from PIL import Image

MAX_WIDTH = 1100  # px
MACHINE_PATH = re.compile(r'(?<![\w.])(/(?:home|root|work|tmp|Users|scratch)/[^\s"\'\\]+)')

def shrink_png(b64:str)->str:
    "A smaller PNG of the same figure (palette, width cap), or the input when that is not smaller."
    raw = base64.b64decode(b64)
    im = Image.open(io.BytesIO(raw))
    if im.mode == 'P' and im.width <= MAX_WIDTH: return b64          # already done
    im = Image.alpha_composite(Image.new('RGBA', im.size, 'white'), im.convert('RGBA')).convert('RGB')  # on the page's white
    if im.width > MAX_WIDTH: im = im.resize((MAX_WIDTH, round(im.height * MAX_WIDTH / im.width)), Image.LANCZOS)
    buf = io.BytesIO()
    im.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(buf, format='PNG', optimize=True)
    out = base64.b64encode(buf.getvalue()).decode()
    return out if len(out) < len(b64) else b64

def clean(path:Path)->list:
    "Clean one notebook in place; returns the machine paths still found in its outputs."
    nb = json.loads(path.read_text())
    found = []
    for c in nb['cells']:
        outs = [o for o in c.get('outputs', []) if not (o['output_type'] == 'stream' and o.get('name') == 'stderr')]
        if ''.join(c.get('source', '')).lstrip().startswith('show_doc('): outs = []   # re-rendered by the docs build
        for o in outs:
            data = o.get('data', {})
            if 'image/png' in data:
                png = data['image/png']
                data['image/png'] = shrink_png((png if isinstance(png, str) else ''.join(png)).strip())  # one string, no trailing newline (as nbdev_clean writes it)
            text = json.dumps({k: v for k, v in o.items() if k != 'data'} | {k: v for k, v in data.items() if not k.startswith('image/')})
            found += [f"{path.name}: cell {c.get('id')}: {m}" for m in MACHINE_PATH.findall(text)]
        if 'outputs' in c: c['outputs'] = outs
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
    return found

if __name__ == '__main__':
    nbs = sorted(Path(sys.argv[1] if len(sys.argv) > 1 else 'nbs').glob('*.ipynb'))
    found = [f for p in nbs for f in clean(p)]
    if found: sys.exit('outputs name paths of this machine (print them relative to the run or data folder):\n' + '\n'.join(found))
