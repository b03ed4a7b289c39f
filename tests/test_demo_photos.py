"""The demo's split by photograph, read back from the files a build writes (the stimulus manifest beside the simulator,
the experiment design, the stimulus table): the shared (test) images' photographs appear in no subject's library and in
no subject's own (training) images. Also: every photograph ships inside an installed package (no download)."""
import numpy as np
import pytest

from secondsight.core import SUBJECTS
from secondsight.data import read_expdesign, read_stim_info
from secondsight.demo import (DEMO_OTHER_PHOTOS, DEMO_PHOTOS, DEMO_TEST_PHOTOS, _photo_views, demo_provenance,
                              ensure_demo, make_demo_stimuli, photo_source)


@pytest.fixture(scope='module')
def demo():
    root = ensure_demo()
    return root, demo_provenance(root), read_expdesign(root)


def photos(prov, ids):
    return set(prov.loc[np.asarray(ids), 'photo'])


def test_manifest_covers_the_brick_and_matches_the_stimulus_table(demo):
    root, prov, _ = demo
    si = read_stim_info(root)
    assert list(prov.index) == list(range(len(si)))
    assert prov.attrs['test_photos'] == list(DEMO_TEST_PHOTOS)
    assert prov.attrs['sources'] == {p: photo_source(p) for p in DEMO_PHOTOS}
    np.testing.assert_array_equal(prov['test'].to_numpy(), si['shared1000'].to_numpy())


@pytest.mark.parametrize('subj', SUBJECTS)
def test_test_photographs_are_in_no_library_and_no_training_set(demo, subj):
    _, prov, ed = demo
    shared, seen = np.unique(ed['sharedix']), ed['subjectim'][subj - 1]
    library, own = np.setdiff1d(prov.index, seen), np.setdiff1d(seen, shared)
    assert photos(prov, shared) == set(DEMO_TEST_PHOTOS)
    assert not photos(prov, shared) & photos(prov, library), f"subject {subj}: a test photograph in the library"
    assert not photos(prov, shared) & photos(prov, own), f"subject {subj}: a test photograph among the training images"
    assert photos(prov, library) <= set(DEMO_OTHER_PHOTOS)


def test_every_photograph_ships_with_a_package():
    for p in DEMO_PHOTOS:
        views = _photo_views(p)
        assert views and all(v.dtype == np.uint8 and v.ndim == 3 and v.shape[2] == 3 and min(v.shape[:2]) >= 128
                             for v in views), p
    assert len(DEMO_PHOTOS) == 22 and len(_photo_views('motorcycle')) == 2


def test_stimuli_come_only_from_the_photographs_asked_for():
    ims, infos = make_demo_stimuli(20, seed=3, size=16, photos=('moon', 'grace_hopper'))
    assert ims.shape == (20, 16, 16, 3) and {i['photo'] for i in infos} == {'moon', 'grace_hopper'}
    with pytest.raises(ValueError, match="'lena' is not a demo photograph"):
        make_demo_stimuli(1, photos=('lena',))
