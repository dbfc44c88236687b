"""Human side of compare: tables, maps, parcels, fROIs, nilearn thresholds, island Moran's I.

Oracles: nilearn's own functions (thresholding, cluster tables, resampling), statsmodels
(Benjamini-Hochberg), esda + libpysal (Moran's I), a pure-Python breadth-first search (mesh
islands), and synthetic volumes with planted answers. The EMFL reference data in
../shared/reference is used when present and the tests say so when it is not.
"""

from __future__ import annotations

import math
from pathlib import Path

import esda
import libpysal
import nibabel as nib
import nilearn
import numpy as np
import pandas as pd
import pytest
from nilearn import datasets
from nilearn.glm import threshold_stats_img
from nilearn.image import resample_to_img
from nilearn.reporting import get_clusters_table
from scipy import ndimage
from scipy.stats import norm
from statsmodels.stats.multitest import multipletests

from topocli.errors import TopoInputError
from topocli.human.froi import define_froi, split_half_froi_responses
from topocli.human.maps import HumanMap, check_alignment, load_human_map, load_parcels
from topocli.human.moran import (
    mesh_adjacency,
    morans_i_sparse,
    surface_islands_morans_i,
    volume_islands_morans_i,
    voxel_adjacency,
)
from topocli.human.profiles import category_profiles, load_human_profiles, roi_profiles
from topocli.human.thresholding import human_cluster_table, threshold_human_map

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
NEEDS_REFERENCE = pytest.mark.skipif(
    not REFERENCE.is_dir(),
    reason=f"EMFL reference data not found at {REFERENCE} (../shared/reference is optional)",
)
NILEARN_DATA = Path(nilearn.__file__).parent / "datasets" / "data"


@pytest.fixture(scope="module")
def motor_img() -> nib.Nifti1Image:
    path = Path(datasets.load_sample_motor_activation_image())
    # Bundled with nilearn (no download): the file lies inside the installed package.
    assert NILEARN_DATA in path.parents
    return nib.load(path)


@pytest.fixture(scope="module")
def fsaverage5_left():
    mesh = datasets.load_fsaverage("fsaverage5")["pial"].parts["left"]
    return np.asarray(mesh.coordinates, dtype=np.float64), np.asarray(mesh.faces)


# ------------------------------------------------------------------------------------------
# nilearn thresholding and cluster tables on the bundled motor map
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("two_sided", [False, True])
def test_threshold_equals_nilearn_on_motor_map(motor_img, two_sided):
    ours, threshold = threshold_human_map(motor_img, alpha=0.05, two_sided=two_sided)
    theirs, expected = threshold_stats_img(
        motor_img, alpha=0.05, height_control="fdr", two_sided=two_sided
    )
    assert threshold == pytest.approx(float(expected), abs=0)
    np.testing.assert_array_equal(ours.get_fdata(), theirs.get_fdata())
    np.testing.assert_array_equal(ours.affine, theirs.affine)


def test_threshold_of_human_map_object_and_path(motor_img, tmp_path):
    path = tmp_path / "motor.nii.gz"
    nib.save(motor_img, path)
    from_path, t1 = threshold_human_map(path, cluster_threshold=10)
    from_map, t2 = threshold_human_map(load_human_map(path), cluster_threshold=10)
    theirs, t3 = threshold_stats_img(
        motor_img, alpha=0.05, height_control="fdr", cluster_threshold=10, two_sided=False
    )
    # nilearn returns z - 1e-12; on the float32 original the 1e-12 is lost to rounding, on our
    # float64 copy it is not, hence the tolerance (the kept voxels are identical).
    assert t1 == t2 == pytest.approx(float(t3), abs=1e-9)
    np.testing.assert_array_equal(from_path.get_fdata(), theirs.get_fdata())
    np.testing.assert_array_equal(from_map.get_fdata(), theirs.get_fdata())


def test_fdr_threshold_agrees_with_statsmodels_bh(motor_img):
    data = motor_img.get_fdata()
    thresholded, _ = threshold_human_map(motor_img, alpha=0.05, two_sided=False)
    inside = data != 0  # nilearn's default 'background' mask is the non-zero voxels here
    reject = multipletests(norm.sf(data[inside]), alpha=0.05, method="fdr_bh")[0]
    expected = np.zeros(data.shape, dtype=bool)
    expected[inside] = reject
    assert expected.sum() > 100
    np.testing.assert_array_equal(thresholded.get_fdata() != 0, expected)


def test_cluster_table_equals_nilearn_on_motor_map(motor_img):
    _, threshold = threshold_human_map(motor_img, alpha=0.05)
    ours = human_cluster_table(motor_img, stat_threshold=threshold, cluster_threshold=10)
    theirs = get_clusters_table(
        motor_img, stat_threshold=threshold, cluster_threshold=10, two_sided=False
    )
    assert len(ours) > 0
    pd.testing.assert_frame_equal(ours, theirs)


def test_surface_threshold_equals_nilearn(fsaverage5_left):
    from nilearn.surface import InMemoryMesh, PolyMesh, SurfaceImage

    coordinates, faces = fsaverage5_left
    z = _bump(coordinates, centre_vertex=100, width=15.0) * 6.0
    z += np.random.default_rng(0).normal(scale=0.5, size=z.size)
    surface = HumanMap(z, "surface")
    ours, threshold = threshold_human_map(surface, mesh=(coordinates, faces))
    reference = SurfaceImage(mesh=PolyMesh(left=InMemoryMesh(coordinates, faces)), data={"left": z})
    theirs, expected = threshold_stats_img(
        reference, alpha=0.05, height_control="fdr", two_sided=False
    )
    assert threshold == pytest.approx(float(expected), abs=0)
    np.testing.assert_array_equal(
        np.asarray(ours.data.parts["left"]), np.asarray(theirs.data.parts["left"])
    )
    with pytest.raises(TopoInputError, match="mesh"):
        threshold_human_map(surface)


# ------------------------------------------------------------------------------------------
# fROIs
# ------------------------------------------------------------------------------------------


def _box_parcel(shape=(30, 30, 30), lo=8, hi=20) -> np.ndarray:
    parcel = np.zeros(shape, dtype=bool)
    parcel[lo:hi, lo:hi, lo:hi] = True
    return parcel


def _planted_blob(parcel: np.ndarray, centre, count: int) -> np.ndarray:
    coords = np.argwhere(parcel)
    distance = np.linalg.norm(coords - np.asarray(centre), axis=1)
    chosen = coords[np.argsort(distance, kind="stable")[:count]]
    blob = np.zeros(parcel.shape, dtype=bool)
    blob[tuple(chosen.T)] = True
    return blob


def test_define_froi_recovers_planted_blob():
    rng = np.random.default_rng(1)
    parcel = _box_parcel()
    n_top = math.ceil(0.10 * parcel.sum())  # 1728 voxels -> 173
    blob = _planted_blob(parcel, (13, 14, 12), n_top)
    contrast = rng.normal(size=parcel.shape)
    contrast[blob] += 4.0
    contrast[0:6, 0:6, 0:6] += 20.0  # a stronger blob outside the parcel must be ignored
    froi = define_froi(contrast, parcel, top_percent=10)
    assert froi.sum() == n_top
    assert not (froi & ~parcel).any()
    dice = 2 * (froi & blob).sum() / (froi.sum() + blob.sum())
    assert dice >= 0.9


def test_define_froi_count_nan_and_ties():
    values = np.array([5.0, 1.0, 5.0, np.nan, 5.0, 2.0] + [0.0] * 26)  # 32 elements, 1 NaN
    parcel = np.ones(values.size, dtype=bool)
    froi = define_froi(values, parcel, top_percent=10)
    # 31 finite values -> ceil(3.1) = 4: the three 5s, then the 2
    np.testing.assert_array_equal(np.flatnonzero(froi), [0, 2, 4, 5])
    # ties broken by index: only two of the three 5s fit in the top 2 (ceil(0.05 * 31) = 2)
    np.testing.assert_array_equal(np.flatnonzero(define_froi(values, parcel, 5)), [0, 2])
    # 10% of 30 is exactly 3 (0.1 * 30 = 3.0000000000000004 in floating point)
    assert define_froi(np.arange(30.0), np.ones(30, dtype=bool), 10).sum() == 3
    with pytest.raises(TopoInputError, match="top_percent"):
        define_froi(values, parcel, 0)
    with pytest.raises(TopoInputError, match="no finite"):
        define_froi(np.full(4, np.nan), np.ones(4, dtype=bool))
    with pytest.raises(TopoInputError, match="shape"):
        define_froi(values, np.ones(5, dtype=bool))


def test_split_half_froi_responses_synthetic():
    rng = np.random.default_rng(2)
    parcel_a, parcel_b = _box_parcel(lo=2, hi=10), _box_parcel(lo=14, hi=24)
    parcels = {"cat/a": parcel_a, "cat/b": HumanMap(parcel_b, "volume", np.eye(4), name="cat/b")}
    shape = parcel_a.shape
    contrast_even, contrast_odd = rng.normal(size=shape), rng.normal(size=shape)
    conditions = ["faces", "objects", "scenes"]
    even = {c: rng.normal(loc=i, size=shape) for i, c in enumerate(conditions)}
    odd = {c: rng.normal(loc=-i, size=shape) for i, c in enumerate(conditions)}
    odd["scenes"][0, 0, 0] = np.nan  # outside every fROI: must not matter
    table = split_half_froi_responses(contrast_even, contrast_odd, even, odd, parcels, 10)
    assert list(table.columns) == [
        "froi", "condition", "split_direction", "response_mean", "n_voxels",
    ]  # fmt: skip
    assert len(table) == 2 * 3 * 3
    for name, parcel in (("cat/a", parcel_a), ("cat/b", parcel_b)):
        n = parcel.sum()
        keep = math.ceil(0.1 * n - 1e-9)
        # independent re-implementation: sort the parcel's voxels by value, highest first
        idx = np.flatnonzero(parcel)
        top_even = idx[np.argsort(-contrast_even.ravel()[idx], kind="stable")[:keep]]
        top_odd = idx[np.argsort(-contrast_odd.ravel()[idx], kind="stable")[:keep]]
        for condition in conditions:
            rows = table[(table.froi == name) & (table.condition == condition)].set_index(
                "split_direction"
            )
            e2o = odd[condition].ravel()[top_even].mean()
            o2e = even[condition].ravel()[top_odd].mean()
            assert rows.loc["even->odd", "response_mean"] == pytest.approx(e2o, rel=1e-12)
            assert rows.loc["odd->even", "response_mean"] == pytest.approx(o2e, rel=1e-12)
            assert rows.loc["mean", "response_mean"] == pytest.approx((e2o + o2e) / 2, rel=1e-12)
            assert (rows["n_voxels"] == keep).all()
    with pytest.raises(TopoInputError, match="differ"):
        split_half_froi_responses(
            contrast_even, contrast_odd, even, {"faces": odd["faces"]}, parcels
        )


def test_split_half_recovers_planted_profile():
    """Planted truth: inside the blob (in both halves) 'faces' responds 3, 'objects' 1."""
    rng = np.random.default_rng(3)
    parcel = _box_parcel()
    blob = _planted_blob(parcel, (14, 14, 14), math.ceil(0.1 * parcel.sum()))
    halves = []
    for _ in range(2):
        contrast = rng.normal(size=parcel.shape)
        contrast[blob] += 5.0
        maps = {
            "faces": rng.normal(scale=0.1, size=parcel.shape) + 3.0 * blob,
            "objects": rng.normal(scale=0.1, size=parcel.shape) + 1.0 * blob,
        }
        halves.append((contrast, maps))
    table = split_half_froi_responses(
        halves[0][0], halves[1][0], halves[0][1], halves[1][1], {"p": parcel}
    )
    mean = table[table.split_direction == "mean"].set_index("condition")["response_mean"]
    assert mean["faces"] == pytest.approx(3.0, abs=0.1)
    assert mean["objects"] == pytest.approx(1.0, abs=0.1)


# ------------------------------------------------------------------------------------------
# Island Moran's I
# ------------------------------------------------------------------------------------------


def _smooth_volume(shape=(16, 16, 16), seed=4, sigma=1.5) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(size=shape)
    smooth = ndimage.gaussian_filter(noise, sigma)
    return smooth / smooth.std()


def test_voxel_adjacency_is_26_neighbourhood():
    mask = np.ones((3, 3, 3), dtype=bool)
    adjacency = voxel_adjacency(mask)
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    assert degree[13] == 26  # the centre touches all others
    assert degree[0] == 7  # a corner touches its 2x2x2 block
    assert (adjacency != adjacency.T).nnz == 0
    assert adjacency.diagonal().sum() == 0


def test_volume_island_moran_equals_esda():
    volume = _smooth_volume()
    threshold = 1.0
    table = volume_islands_morans_i(volume, threshold, min_size=8, permutations=0)
    assert len(table) >= 2
    labels, _ = ndimage.label(volume >= threshold, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(labels.ravel())[1:]
    assert table["n_units"].tolist() == sorted(sizes[sizes >= 8].tolist(), reverse=True)
    assert table["cluster"].tolist() == list(range(1, len(table) + 1))
    for row in table.itertuples():
        island = labels == labels[row.peak_index]
        assert island.sum() == row.n_units >= 8
        coords = np.argwhere(island)  # C order, as the island's elements
        weights = libpysal.weights.DistanceBand(
            coords.astype(float), threshold=math.sqrt(3) + 1e-6, binary=True, silence_warnings=True
        )
        expected = esda.Moran(volume[island], weights, transformation="r", permutations=0)
        assert row.moran_i == pytest.approx(expected.I, rel=1e-10, abs=1e-12)
        assert np.isnan(row.moran_p)  # permutations=0
        assert row.expected_i == pytest.approx(expected.EI, rel=1e-12)
        assert row.peak_value == pytest.approx(volume[island].max())
        assert volume[row.peak_index] == row.peak_value


def test_morans_i_sparse_permutations_match_esda():
    volume = _smooth_volume(seed=5)
    island = ndimage.label(volume >= 1.0, structure=np.ones((3, 3, 3)))[0]
    sizes = np.bincount(island.ravel())[1:]
    island = island == (np.argmax(sizes) + 1)
    values = volume[island]
    weights = voxel_adjacency(island)
    result = morans_i_sparse(values, weights, permutations=40, rng=np.random.default_rng(11))
    # Reproduce the shuffles (one block of 40) and score each with esda.
    z = values - values.mean()
    order = np.random.default_rng(11).permuted(np.tile(np.arange(z.size), (40, 1)), axis=1)
    shuffled = z[order]
    w = libpysal.weights.WSP(weights.tocsr()).to_W(silence_warnings=True)
    for k in range(40):
        expected = esda.Moran(shuffled[k], w, transformation="r", permutations=0).I
        assert result.permuted[k] == pytest.approx(expected, rel=1e-10, abs=1e-12)
    assert result.p_value == (1 + np.sum(result.permuted >= result.i)) / 41
    assert result.i > 0.3 and result.p_value == pytest.approx(1 / 41)  # smooth island


def test_moran_permutation_null_is_centred_on_expectation():
    rng = np.random.default_rng(6)
    island = np.ones((6, 6, 6), dtype=bool)
    values = rng.normal(size=island.sum())  # no spatial structure
    result = morans_i_sparse(values, voxel_adjacency(island), permutations=999, rng=rng)
    assert result.permuted.mean() == pytest.approx(result.expected_i, abs=0.01)
    assert 0.01 < result.p_value < 0.99


def test_islands_use_26_connectivity_and_min_size():
    volume = np.zeros((10, 10, 10))
    volume[1:3, 1:3, 1:3] = 2.0  # 8 voxels
    volume[3, 3, 3] = 2.5  # touches the cube only at a corner -> same island (9 voxels)
    volume[6:8, 6:8, 6] = 3.0  # 4 voxels -> below min_size
    table = volume_islands_morans_i(volume, 1.0, min_size=8, permutations=9)
    assert table["n_units"].tolist() == [9]
    assert table["peak_value"].tolist() == [2.5]


def test_volume_islands_match_model_side_on_a_single_slice():
    """A one-voxel-thick volume: 26-neighbour islands are the sheet's queen islands, so the
    human and model implementations must give the same numbering, I and p (same seeds)."""
    clusters = pytest.importorskip("topocli.stats.clusters")
    grid = _smooth_volume(shape=(40, 40, 1), seed=9)[..., 0]
    ours = volume_islands_morans_i(grid[..., None], 0.8, min_size=8, permutations=199, seed=3)
    labels = clusters.label_components(grid >= 0.8, connectivity=8, min_size=8)
    theirs = clusters.island_morans_i(grid, labels, permutations=199, seed=3, min_size=8).table
    assert len(ours) >= 2
    assert ours["cluster"].tolist() == theirs["cluster"].tolist()
    assert ours["n_units"].tolist() == theirs["n_units"].tolist()
    np.testing.assert_allclose(ours["moran_i"], theirs["moran_i"], rtol=1e-12)
    np.testing.assert_array_equal(ours["moran_p"], theirs["moran_p"])


def _bump(coordinates: np.ndarray, centre_vertex: int, width: float) -> np.ndarray:
    distance = np.linalg.norm(coordinates - coordinates[centre_vertex], axis=1)
    return np.exp(-((distance / width) ** 2))


def _bfs_components(neighbours: dict[int, set[int]], members: set[int]) -> list[list[int]]:
    seen, components = set(), []
    for start in sorted(members):
        if start in seen:
            continue
        stack, component = [start], []
        seen.add(start)
        while stack:
            vertex = stack.pop()
            component.append(vertex)
            for other in neighbours[vertex]:
                if other in members and other not in seen:
                    seen.add(other)
                    stack.append(other)
        components.append(sorted(component))
    return components


def test_surface_island_moran_on_fsaverage5(fsaverage5_left):
    coordinates, faces = fsaverage5_left
    rng = np.random.default_rng(7)
    values = 3 * _bump(coordinates, 500, 12.0) + 3 * _bump(coordinates, 7000, 10.0)
    values += rng.normal(scale=0.3, size=values.size)
    threshold = 1.5
    table = surface_islands_morans_i(values, faces, threshold, min_size=8, permutations=99)
    # Independent adjacency and components: a neighbour dict from the triangles and a BFS.
    neighbours: dict[int, set[int]] = {v: set() for v in range(len(coordinates))}
    for a, b, c in faces.tolist():
        neighbours[a] |= {b, c}
        neighbours[b] |= {a, c}
        neighbours[c] |= {a, b}
    members = set(np.flatnonzero(values >= threshold).tolist())
    expected = [c for c in _bfs_components(neighbours, members) if len(c) >= 8]
    assert len(table) == len(expected) >= 2
    expected.sort(key=len, reverse=True)  # islands are numbered largest first
    for row, component in zip(table.itertuples(), expected, strict=True):
        assert row.n_units == len(component)
        index = {v: k for k, v in enumerate(component)}
        w = libpysal.weights.W(
            {index[v]: [index[o] for o in neighbours[v] if o in index] for v in component},
            silence_warnings=True,
        )
        moran = esda.Moran(values[component], w, transformation="r", permutations=0)
        assert row.moran_i == pytest.approx(moran.I, rel=1e-10)
        assert row.moran_i > 0.2 and row.moran_p < 0.05


def test_mesh_adjacency_rejects_bad_faces():
    with pytest.raises(TopoInputError, match="outside"):
        mesh_adjacency(np.array([[0, 1, 5]]), 3)
    with pytest.raises(TopoInputError, match="shape"):
        mesh_adjacency(np.array([0, 1, 2]), 3)


# ------------------------------------------------------------------------------------------
# Reading maps and parcels
# ------------------------------------------------------------------------------------------


def test_load_human_map_formats(tmp_path, fsaverage5_left):
    volume = np.random.default_rng(8).normal(size=(5, 6, 7)).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "v.nii.gz")
    nib.save(nib.Nifti1Image(volume[..., None], affine), tmp_path / "v4.nii")
    nib.save(nib.MGHImage(volume, affine), tmp_path / "v.mgz")
    n = len(fsaverage5_left[0])
    per_vertex = np.arange(n, dtype=np.float32)
    nib.save(nib.MGHImage(per_vertex.reshape(n, 1, 1), np.eye(4)), tmp_path / "s.mgz")
    gifti = nib.gifti.GiftiImage(darrays=[nib.gifti.GiftiDataArray(per_vertex)])
    nib.save(gifti, tmp_path / "s.func.gii")
    for name in ("v.nii.gz", "v4.nii", "v.mgz"):
        loaded = load_human_map(tmp_path / name)
        assert loaded.kind == "volume" and loaded.shape == (5, 6, 7)
        np.testing.assert_allclose(loaded.data, volume)
        np.testing.assert_allclose(loaded.affine, affine)
    for name in ("s.mgz", "s.func.gii"):
        loaded = load_human_map(tmp_path / name)
        assert loaded.kind == "surface" and loaded.n_vertices == n and loaded.affine is None
        np.testing.assert_array_equal(loaded.data, per_vertex)


def test_load_human_map_bad_files(tmp_path, fsaverage5_left):
    (tmp_path / "junk.nii.gz").write_bytes(b"not an image")
    nib.save(
        nib.Nifti1Image(np.random.default_rng(0).normal(size=(20, 20, 20)), np.eye(4)),
        tmp_path / "whole.nii.gz",
    )
    whole = (tmp_path / "whole.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "map.txt").write_text("x")
    coordinates, faces = fsaverage5_left
    mesh = nib.gifti.GiftiImage(
        darrays=[
            nib.gifti.GiftiDataArray(coordinates.astype(np.float32), "NIFTI_INTENT_POINTSET"),
            nib.gifti.GiftiDataArray(faces.astype(np.int32), "NIFTI_INTENT_TRIANGLE"),
        ]
    )
    nib.save(mesh, tmp_path / "pial.surf.gii")
    for name, message in (
        ("junk.nii.gz", "cannot read"),
        ("cut.nii.gz", "cannot read"),
        ("map.txt", "unknown map format"),
        ("missing.nii", "not found"),
        ("pial.surf.gii", "mesh"),
    ):
        with pytest.raises(TopoInputError, match=message) as caught:
            load_human_map(tmp_path / name)
        assert name in str(caught.value)


def test_uncompressed_file_named_nii_gz_is_read(tmp_path):
    volume = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "plain.nii")
    (tmp_path / "plain.nii").rename(tmp_path / "plain.nii.gz")
    np.testing.assert_array_equal(load_human_map(tmp_path / "plain.nii.gz").data, volume)


def _write_mask(path: Path, mask: np.ndarray, affine=None, value=1.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(
        nib.Nifti1Image(mask.astype(np.float32) * value, np.eye(4) if affine is None else affine),
        path,
    )


def test_load_parcels_recursive_names_and_filters(tmp_path):
    parcel = _box_parcel((12, 12, 12), 2, 6)
    _write_mask(tmp_path / "language" / "lh.ifg.nii.gz", parcel, value=2.0)  # label-valued
    _write_mask(tmp_path / "tom" / "lh.tpj.nii", parcel)
    atlas = parcel.astype(float)
    atlas[8:10, 8:10, 8:10] = 3.0
    _write_mask(tmp_path / "language" / "all.nii.gz", atlas)
    parcels = load_parcels(tmp_path)
    assert list(parcels) == ["language/all", "language/lh.ifg", "tom/lh.tpj"]
    assert parcels["language/lh.ifg"].data.dtype == bool
    np.testing.assert_array_equal(parcels["language/lh.ifg"].data, parcel)
    assert parcels["language/all"].data.sum() == parcel.sum() + 8  # union of labels
    assert list(load_parcels(tmp_path, include=["tom"])) == ["tom/lh.tpj"]
    assert list(load_parcels(tmp_path, include=["language/lh.ifg"])) == ["language/lh.ifg"]
    split = load_parcels(tmp_path, include=["language/all"], split_labels=True)
    assert {k: v.data.sum() for k, v in split.items()} == {
        "language/all:1": parcel.sum(),
        "language/all:3": 8,
    }


def test_load_parcels_bad_input(tmp_path):
    _write_mask(tmp_path / "md" / "lh.empty.nii.gz", np.zeros((4, 4, 4), dtype=bool))
    with pytest.raises(TopoInputError, match="parcel 'md/lh.empty' is empty"):
        load_parcels(tmp_path)
    with pytest.raises(TopoInputError, match="no parcel files"):
        load_parcels(tmp_path, include=["language"])
    with pytest.raises(TopoInputError, match="not found"):
        load_parcels(tmp_path / "absent")


def test_check_alignment_refuses_or_resamples(motor_img, tmp_path):
    stat = HumanMap(motor_img.get_fdata(), "volume", motor_img.affine, "motor.nii.gz")
    target = np.zeros((40, 48, 36), dtype=bool)
    target[10:20, 10:20, 10:20] = True
    parcel = HumanMap(
        target, "volume", np.diag([-4.0, 4.0, 4.0, 1.0]) + _translation(78, -112, -50), name="md/x"
    )
    with pytest.raises(TopoInputError) as caught:
        check_alignment(stat, parcel, resample=False)
    message = str(caught.value)
    assert "\n" not in message and "md/x" in message and "refusing" in message
    assert "53x63x46" in message and "40x48x36" in message
    aligned = check_alignment(stat, parcel, resample=True)
    expected = resample_to_img(
        motor_img,
        parcel.to_nifti(),
        interpolation="continuous",
        force_resample=True,
        copy_header=True,
    )
    assert aligned.shape == parcel.shape
    np.testing.assert_allclose(aligned.data, expected.get_fdata())
    np.testing.assert_allclose(aligned.affine, parcel.affine)
    assert check_alignment(aligned, parcel) is aligned
    # boolean masks are resampled with nearest-neighbour interpolation and stay boolean
    mask = HumanMap(stat.data > 3, "volume", stat.affine)
    resampled_mask = check_alignment(mask, parcel, resample=True)
    nearest = resample_to_img(
        mask.to_nifti(),
        parcel.to_nifti(),
        interpolation="nearest",
        force_resample=True,
        copy_header=True,
    )
    assert resampled_mask.data.dtype == bool
    np.testing.assert_array_equal(resampled_mask.data, nearest.get_fdata() > 0.5)
    surface = HumanMap(np.zeros(10), "surface")
    with pytest.raises(TopoInputError, match="surface map cannot be used with volume"):
        check_alignment(surface, parcel)
    with pytest.raises(TopoInputError, match="vertices"):
        check_alignment(surface, HumanMap(np.ones(12, dtype=bool), "surface"), resample=True)


def _translation(x: float, y: float, z: float) -> np.ndarray:
    out = np.zeros((4, 4))
    out[:3, 3] = (x, y, z)
    return out


# ------------------------------------------------------------------------------------------
# Profile tables
# ------------------------------------------------------------------------------------------


def test_simple_profile_format(tmp_path):
    path = tmp_path / "simple.csv"
    path.write_text("ROI,condition,mean,sem,n\nffa,faces,1.5,0.2,6\nffa,objects,0.5,0.1,6\n")
    table = load_human_profiles(path)
    assert list(table.columns) == ["roi", "category", "condition", "mean", "sem", "n"]
    assert table["category"].tolist() == ["ffa", "ffa"]
    assert roi_profiles(table)["ffa"].to_dict() == {"faces": 1.5, "objects": 0.5}


def test_profile_table_bad_input(tmp_path):
    emfl = tmp_path / "emfl.csv"
    emfl.write_text("roi_label,condition,mean_beta_mean\nlh_ifg,math,1.0\n")
    with pytest.raises(TopoInputError) as caught:
        load_human_profiles(emfl)
    message = str(caught.value)
    assert "emfl.csv" in message and "mean_beta_sem" in message and "parcel_category" in message
    simple = tmp_path / "simple.csv"
    simple.write_text("roi,condition,mean\nffa,faces,1\n")
    with pytest.raises(TopoInputError, match="missing columns: sem, n"):
        load_human_profiles(simple)
    duplicated = tmp_path / "dup.csv"
    duplicated.write_text("roi,condition,mean,sem,n\nffa,faces,1,0,1\nffa,faces,2,0,1\n")
    with pytest.raises(TopoInputError, match="repeats"):
        load_human_profiles(duplicated)
    text = tmp_path / "text.csv"
    text.write_text("roi,condition,mean,sem,n\nffa,faces,high,0,1\n")
    with pytest.raises(TopoInputError, match="non-numeric"):
        load_human_profiles(text)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(TopoInputError, match="cannot read"):
        load_human_profiles(tmp_path / "empty.csv")


@NEEDS_REFERENCE
def test_emfl_reference_table_category_profiles():
    table = load_human_profiles(REFERENCE / "emfl_human_froi_responses.csv")
    assert len(table) == 500 and table["n"].eq(6).all()
    profiles = category_profiles(table, ["language", "tom", "md"])
    assert profiles.shape == (10, 3)
    assert {"false_belief", "false_photo", "math", "nonwords"} <= set(profiles.index)
    raw = pd.read_csv(REFERENCE / "emfl_human_froi_responses.csv")
    tom = raw[(raw.parcel_category == "tom") & (raw.condition == "false_belief")]
    assert profiles.loc["false_belief", "tom"] == pytest.approx(tom.mean_beta_mean.mean())
    # ToM fROIs respond more to false-belief than to false-photo stories, MD more to math
    assert profiles.loc["false_belief", "tom"] > profiles.loc["false_photo", "tom"]
    assert profiles.loc["math", "md"] > profiles.loc["false_belief", "md"]
    with pytest.raises(TopoInputError, match="unknown human categories"):
        category_profiles(table, ["nope"])


@NEEDS_REFERENCE
def test_emfl_parcels_load_one_parcel_and_a_mislabelled_gzip():
    parcels = load_parcels(REFERENCE / "emfl-parcels", include=["language/lh.ifg"])
    assert list(parcels) == ["language/lh.ifg"]
    ifg = parcels["language/lh.ifg"]
    assert ifg.kind == "volume" and ifg.data.dtype == bool and ifg.data.sum() > 0
    assert ifg.shape == (91, 109, 91)  # stored as (91, 109, 91, 1): trailing axis dropped
    # julian/lh.lang.nii.gz is an uncompressed NIfTI despite its name; it still loads
    lang = load_parcels(REFERENCE / "emfl-parcels", include=["julian/lh.lang"])
    assert lang["julian/lh.lang"].data.sum() > 0
