"""Image-folder datasets: MVTec AD (`mvtec`), a user's own folder (`folder`), and `--val-dir`.

MVTec AD, as its archive unpacks (one folder per category):

    <data-dir>/<category>/train/good/*.png
    <data-dir>/<category>/test/good/*.png           normal
    <data-dir>/<category>/test/<defect>/NNN.png     abnormal
    <data-dir>/<category>/ground_truth/<defect>/NNN_mask.png

A user's folder (`--data folder --data-dir D`, or `--data-dir D` alone):

    D/train/**            normal images, nested folders allowed
    D/test/good/**        normal                                   (test/ is optional:
    D/test/<name>/**      abnormal, class <name>                    without it the run
    D/ground_truth/<name>/<same relative path>_mask.png              trains on normal images
                                                                     only, with no test set)
or a plain tree of images (no train/ or test/): every image is normal, there is no test set.
To evaluate, a labelled set is enough: D/test/ as above, or D/good/ + D/<name>/ folders.

Every mask must belong to a test image (same relative path, stem + "_mask"); for MVTec every
defect image must have one. MVTec AD's licence (CC BY-NC-SA 4.0) does not allow
redistribution, so it is never downloaded. The split holds paths and the one preprocessing
(`ganomaly.images`) reads them.

Every file is decoded once up front (`ganomaly.images.check_images`), so that a bad file stops
the run before training, not after it: empty, truncated or unknown files, FIFOs, images over
`max_pixels`, folders that cannot be listed. By default the run stops with one DataError that
lists every such file and why; with `skip_bad` they are left out with a warning listing them
(a bad mask leaves out its test image too, so no test image silently loses its mask).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ganomaly.data.errors import DataError
from ganomaly.data.layout import (
    MVTEC_SUBDIRS,
    NORMAL,
    detect_layout,
    mvtec_category_dirs,
    not_a_training_folder,
    plain_tree_images,
)
from ganomaly.data.locate import cache_dir, file_digest, search_roots
from ganomaly.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_KINDS,
    IMAGE_SUFFIXES,
    check_images,
    find_images,
)


@dataclass
class FolderSet:
    """A folder dataset's files, labels and provenance."""

    root: Path
    train: list[Path]
    test: list[Path]
    test_ids: list[str]
    test_classes: list[str]
    test_is_abnormal: np.ndarray
    test_masks: list[Path | None]
    fingerprint: str


def _images(folder: Path, problems: dict[Path, str]) -> list[Path]:
    return find_images(folder, problems) if folder.is_dir() else []


def labelled_folder(
    folder: Path, what: str, problems: dict[Path, str] | None = None
) -> tuple[list[Path], list[str]]:
    """`good/` (normal) and other sub-folders (abnormal, class = folder) -> (files, classes).

    Folders that cannot be listed go to `problems` (see `find_images`)."""
    if not folder.is_dir():
        raise DataError(f"{what} {folder}: no such directory")
    # not is_dir() rather than is_file(): a FIFO named like an image is reported, not ignored
    stray = [p for p in folder.iterdir() if not p.is_dir() and p.suffix.lower() in IMAGE_SUFFIXES]
    if stray:
        raise DataError(
            f"{stray[0]}: images in {what} must be inside {NORMAL}/ (normal) or <defect>/ folders"
        )
    files: list[Path] = []
    classes: list[str] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        found = find_images(sub, problems)
        files += found
        classes += [sub.name] * len(found)
    _require_normal(classes, folder, what)
    return files, classes


def _require_normal(classes: list[str], folder: Path, what: str) -> None:
    if NORMAL not in classes:
        raise DataError(
            f"{what} {folder}: no normal images in {folder / NORMAL}/ (normal images are needed "
            "to measure false alarms)"
        )


def leave_out_bad(
    files: list[Path], problems: dict[Path, str], where: Path, skip_bad: bool, max_pixels: int
) -> set[Path]:
    """Decode every file; with bad ones (or `problems` found while listing), raise one
    DataError listing each and why, or, with `skip_bad`, warn with that list.

    Returns the paths to leave out (empty when every file is good)."""
    bad = {**problems, **check_images(files, max_pixels)}
    if not bad:
        return set()
    n = len(bad)
    listing = "\n".join(f"  {path}: {reason}" for path, reason in sorted(bad.items()))
    images = "image" if n == 1 else "images"
    if not skip_bad:
        raise DataError(
            f"{where}: {n} unusable {images}; fix or remove them, or pass --skip-bad to leave "
            f"them out:\n{listing}"
        )
    warnings.warn(
        f"--skip-bad: left out {n} unusable {images} of {where}:\n{listing}", stacklevel=3
    )
    return set(bad)


def _masks(
    root: Path,
    test_dir: Path | None,
    test: list[Path],
    classes: list[str],
    required: bool,
    problems: dict[Path, str],
) -> list[Path | None]:
    """Match ground_truth/<class>/<rel>_mask.<ext> to test/<class>/<rel>.<ext>."""
    if test_dir is None:
        return []
    gt_root = root / "ground_truth"
    by_key = {(p.relative_to(test_dir).with_suffix("").as_posix()): i for i, p in enumerate(test)}
    masks: list[Path | None] = [None] * len(test)
    for mask in _images(gt_root, problems):
        rel = mask.relative_to(gt_root).with_suffix("").as_posix()
        if not rel.endswith("_mask"):
            raise DataError(f"{mask}: mask names must end in _mask (e.g. 000_mask.png)")
        key = rel[: -len("_mask")]
        if key not in by_key:
            raise DataError(
                f"{mask}: no test image test/{key}.* matches this mask "
                "(expected ground_truth/<defect>/<image name>_mask.png)"
            )
        index = by_key[key]
        if classes[index] == NORMAL:
            raise DataError(f"{mask}: a mask for a normal image (test/{NORMAL}/ has no masks)")
        masks[index] = mask
    if required:
        missing = [test[i] for i, c in enumerate(classes) if c != NORMAL and masks[i] is None]
        if missing:
            raise DataError(
                f"{missing[0]}: no mask ground_truth/{missing[0].parent.name}/"
                f"{missing[0].stem}_mask.png"
                + (
                    f" (and {len(missing) - 1} more images without masks)"
                    if len(missing) > 1
                    else ""
                )
            )
    return masks


def read_folder_set(
    root: Path,
    train: list[Path] | Path | None,
    test_dir: Path | None,
    masks_required: bool,
    skip_bad: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    problems: dict[Path, str] | None = None,
) -> FolderSet:
    """List a folder dataset rooted at `root` and check that every file decodes (see the
    module's notes on `skip_bad`).

    `train`: a folder of training images, the images themselves, or None (evaluation: no
    training images). `test_dir`: a labelled folder (good/ + defect folders), or None (no
    test set: training on normal images only). `problems`: folders that could not be listed
    while finding `train`'s images, reported with the bad files.
    """
    problems = dict(problems or {})
    train_dir = train if isinstance(train, Path) else root
    train_files = _images(train, problems) if isinstance(train, Path) else list(train or [])
    if train is not None and not train_files and not problems:
        raise DataError(f"{train_dir}: no training images ({IMAGE_KINDS})")
    test: list[Path] = []
    classes: list[str] = []
    if test_dir is not None:
        test, classes = labelled_folder(test_dir, "test folder", problems)
    masks = _masks(root, test_dir, test, classes, masks_required, problems)
    listed = [*train_files, *test, *(m for m in masks if m is not None)]
    bad = leave_out_bad(listed, problems, root, skip_bad, max_pixels)
    if bad:
        train_files = [p for p in train_files if p not in bad]
        if train is not None and not train_files:
            raise DataError(f"{train_dir}: no readable training images ({len(bad)} left out)")
        keep = [i for i, p in enumerate(test) if p not in bad and masks[i] not in bad]
        test, classes = [test[i] for i in keep], [classes[i] for i in keep]
        masks = [masks[i] for i in keep]
        if test_dir is not None:
            _require_normal(classes, test_dir, "test folder")
    ids = [p.relative_to(root).as_posix() for p in test]
    files = train_files + test + [m for m in masks if m is not None]
    return FolderSet(
        root=root,
        train=train_files,
        test=test,
        test_ids=ids,
        test_classes=classes,
        test_is_abnormal=np.array([c != NORMAL for c in classes], dtype=np.int64),
        test_masks=masks,
        fingerprint=_fingerprint(root, files),
    )


def _fingerprint(root: Path, files: list[Path]) -> str:
    # Names relative to the root, so the same dataset copied elsewhere keeps its fingerprint;
    # file contents are hashed, so a changed image changes it.
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(f"{path.relative_to(root).as_posix()}:{file_digest(path)}\n".encode())
    return digest.hexdigest()


def _found_categories(roots: list[Path]) -> list[str]:
    return sorted(
        {p.name for r in roots for s in MVTEC_SUBDIRS for p in mvtec_category_dirs(r / s)}
    )


def find_mvtec_category(data_dir: str | None, category: str | None) -> Path:
    """The folder of an MVTec AD category by the search order; never downloads. `data_dir`
    may also be the category's own folder (then `category` may be omitted)."""
    roots = search_roots(data_dir)
    if data_dir is not None:
        given = roots[0]
        if detect_layout(given).kind == "mvtec-category" and category in (None, given.name):
            return given
    if not category:
        found = _found_categories(roots)
        listing = f" (found: {', '.join(found)})" if found else ""
        raise DataError(f"--data mvtec needs --category NAME, e.g. bottle{listing}")
    for root in roots:
        for sub in MVTEC_SUBDIRS:
            candidate = root / sub / category
            if (candidate / "train" / NORMAL).is_dir() and (candidate / "test").is_dir():
                return candidate
    found = _found_categories(roots)
    if found:
        raise DataError(
            f"MVTec AD category {category!r} not found; categories found: {', '.join(found)}"
        )
    places = ", ".join(str(r) for r in roots)
    raise DataError(
        f"MVTec AD category {category!r} not found (looked in {places}). Its licence does not "
        "allow redistribution, so it is never downloaded: get it from the MVTec AD website and "
        f"unpack it into --data-dir, $GANOMALY_DATA/mvtec or {cache_dir() / 'mvtec'} so that "
        f"<dir>/{category}/train/good and <dir>/{category}/test exist"
    )


def mvtec_categories(data_dir: str | None) -> list[str]:
    """Names of the MVTec AD categories found by the search order, sorted."""
    found = _found_categories(search_roots(data_dir))
    if not found:
        raise DataError("no MVTec AD categories found: pass --data-dir (see docs/datasets.md)")
    return found


def load_mvtec(
    data_dir: str | None,
    category: str | None,
    skip_bad: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    need_train: bool = True,
) -> FolderSet:
    """An MVTec AD category: train/good, test/<good|defect>, ground_truth masks (required).
    Without `need_train` (evaluation) the training images are not read."""
    root = find_mvtec_category(data_dir, category)
    train = root / "train" / NORMAL if need_train else None
    return read_folder_set(root, train, root / "test", True, skip_bad, max_pixels)


def load_user_folder(
    data_dir: str | None,
    skip_bad: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    need_train: bool = True,
) -> FolderSet:
    """A user's folder (see the module's notes): train/ with or without test/, or a plain
    tree of normal images; without `need_train` (evaluation) a labelled set is enough:
    test/, or good/ + defect folders."""
    if not data_dir:
        raise DataError("--data folder needs --data-dir DIR (a folder of normal images)")
    root = Path(data_dir).expanduser()
    layout = detect_layout(data_dir)
    test_dir = root / "test" if (root / "test").is_dir() else None
    problems: dict[Path, str] = {}
    if layout.kind in ("folder", "mvtec-category"):
        train: list[Path] | Path | None = root / "train" if need_train else None
    elif layout.kind == "images" and need_train:
        train = plain_tree_images(root, problems)
    elif layout.kind == "test-only" and not need_train:
        train = None
    elif layout.kind == "labelled" and not need_train:
        train, test_dir = None, root
    elif need_train:
        raise DataError(not_a_training_folder(layout, str(data_dir)))
    else:
        raise DataError(
            f"{layout.description}: evaluating needs labelled images, test/{NORMAL}/ + "
            f"test/<defect>/ or {NORMAL}/ + <defect>/ folders"
        )
    return read_folder_set(root, train, test_dir, False, skip_bad, max_pixels, problems)


def load_val_dir(
    val_dir: str,
    test: list[Path],
    skip_bad: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[list[Path], np.ndarray]:
    """A labelled validation folder (good/ + defect folders), kept apart from the test set."""
    folder = Path(val_dir).expanduser()
    problems: dict[Path, str] = {}
    files, classes = labelled_folder(folder, "--val-dir", problems)
    bad = leave_out_bad(files, problems, folder, skip_bad, max_pixels)
    if bad:
        keep = [i for i, p in enumerate(files) if p not in bad]
        files, classes = [files[i] for i in keep], [classes[i] for i in keep]
        _require_normal(classes, folder, "--val-dir")
    # after leave_out_bad: resolving a symlink loop raises, and those are left out by now
    test_files = {p.resolve() for p in test}
    shared = [p for p in files if p.resolve() in test_files]
    if shared:
        raise DataError(f"--val-dir {val_dir}: {shared[0]} is also a test image; keep them apart")
    return files, np.array([c != NORMAL for c in classes], dtype=np.int64)


__all__ = [
    "FolderSet",
    "labelled_folder",
    "leave_out_bad",
    "load_mvtec",
    "load_user_folder",
    "load_val_dir",
    "mvtec_categories",
]
