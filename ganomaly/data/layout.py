"""What a `--data-dir` holds, so that `--data-dir` alone is enough to train.

    layout = detect_layout("my_parts/")   # -> Layout(kind="images", data="folder", ...)
    choice = choose_data(config)          # -> DataChoice(data="folder", description=...)

Layouts, checked in this order:

    mvtec-category  D/train/good/, D/test/, D/ground_truth/          -> --data mvtec
    folder          D/train/ (nested), D/test/good/ + D/test/<name>/ optional -> --data folder
    test-only       D/test/ without D/train/ (evaluate only)         -> --data folder
    mvtec-root      D/<category>/train/good/ and D/<category>/test/   -> --data mvtec --category
    idx             MNIST-style IDX files                             -> --data mnist
    cifar10         CIFAR-10 python batches or their tarball          -> --data cifar10
    labelled        D/good/ and other folders (evaluate only)         -> --data folder
    images          any other tree of images: all normal, no test set -> --data folder

Only the file system is read (names, never pixels); neither torch nor Pillow is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ganomaly.data.errors import DataError
from ganomaly.image_files import IMAGE_KINDS, find_images

if TYPE_CHECKING:
    from ganomaly.config import RunConfig

NORMAL = "good"
# Where MVTec AD's categories sit below a root, as its archive and common copies name it.
MVTEC_SUBDIRS = ("", "mvtec", "mvtec_anomaly_detection", "mvtec_ad")
CLASS_DATASETS = ("mnist", "fashion-mnist", "cifar10", "digits")
FOLDER_DATASETS = ("mvtec", "folder")
DATASETS = CLASS_DATASETS + FOLDER_DATASETS
# The datasets a layout can be loaded as when --data names one explicitly.
COMPATIBLE = {
    "idx": ("mnist", "fashion-mnist"),
    "cifar10": ("cifar10",),
    "mvtec-category": ("mvtec", "folder"),
    "mvtec-root": ("mvtec",),
    "folder": ("folder",),
    "test-only": ("folder",),
    "labelled": ("folder",),
    "images": ("folder",),
}


@dataclass(frozen=True)
class Layout:
    """What a data folder was recognised as."""

    kind: str  # one of COMPATIBLE's keys, or "empty"
    data: str | None  # the dataset it is loaded as (None: nothing recognisable)
    description: str  # one line for the user, starting with the folder
    categories: tuple[str, ...] = ()  # mvtec-root: the categories found


@dataclass(frozen=True)
class DataChoice:
    """The dataset a run loads, and (when --data-dir decided it) how it was recognised."""

    data: str
    description: str = ""  # empty when --data named the dataset
    category: str | None = None  # mvtec: set when the folder holds exactly one category


def mvtec_category_dirs(folder: Path) -> list[Path]:
    """Sub-folders of `folder` laid out as MVTec AD categories (train/good/ and test/)."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if (p / "train" / NORMAL).is_dir() and (p / "test").is_dir()
    )


def is_run_directory(folder: Path) -> bool:
    """A ganomaly run (or evaluate report) directory: its figures are not training images."""
    return (folder / "config.yaml").is_file() and (folder / "data.json").is_file()


def plain_tree_images(root: Path, problems: dict[Path, str] | None = None) -> list[Path]:
    """Every image under `root`, recursively and sorted, except those inside run directories
    (a run written into the data folder must not become training data for the next one)."""
    runs: dict[Path, bool] = {}

    def in_a_run(path: Path) -> bool:
        for parent in path.relative_to(root).parents:
            folder = root / parent
            if folder not in runs:
                runs[folder] = is_run_directory(folder)
            if runs[folder]:
                return True
        return False

    return [p for p in find_images(root, problems) if not in_a_run(p)]


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _idx_dataset(folder: Path) -> str | None:
    from ganomaly.data.mnist import find_idx_files

    if find_idx_files("mnist", [folder]) is not None:
        return "mnist"
    return "fashion-mnist" if find_idx_files("fashion-mnist", [folder]) is not None else None


def detect_layout(data_dir: str | Path) -> Layout:
    """Recognise the layout of `data_dir` (see the module's table); raises DataError when it
    does not exist."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"--data-dir {data_dir}: no such directory")
    name = str(data_dir)
    train, test = root / "train", root / "test"
    if (train / NORMAL).is_dir() and test.is_dir() and (root / "ground_truth").is_dir():
        return Layout(
            "mvtec-category",
            "mvtec",
            f"{name} is an MVTec AD category (train/good, test, ground_truth)",
        )
    if train.is_dir():
        if test.is_dir():
            return Layout("folder", "folder", f"{name} is a folder dataset (train/ and test/)")
        return Layout(
            "folder", "folder", f"{name} is a folder dataset with train/ and no test/ (normal only)"
        )
    if test.is_dir():
        return Layout("test-only", "folder", f"{name} holds test/ and no train/ folder")
    categories = tuple(
        sorted({p.name for sub in MVTEC_SUBDIRS for p in mvtec_category_dirs(root / sub)})
    )
    if categories:
        return Layout(
            "mvtec-root", "mvtec",
            f"{name} is an MVTec AD root with categories {', '.join(categories)}", categories,
        )  # fmt: skip
    idx = _idx_dataset(root)
    if idx is not None:
        return Layout("idx", idx, f"{name} holds IDX files: {idx}")
    from ganomaly.data.cifar import find_cifar10

    if find_cifar10([root]) is not None:
        return Layout("cifar10", "cifar10", f"{name} holds CIFAR-10 batches")
    subfolders = _subfolders(root)
    names = [p.name for p in subfolders]
    # good/ beside other folders reads as labelled: never train on a defects/ folder silently
    if NORMAL in names and len(names) > 1:
        others = ", ".join(f"{n}/" for n in names if n != NORMAL)
        return Layout(
            "labelled", "folder", f"{name} is a labelled set ({NORMAL}/ normal; {others} abnormal)"
        )
    if plain_tree_images(root):
        where = f"in {len(subfolders)} sub-folders" if subfolders else "in one folder"
        return Layout(
            "images", "folder",
            f"{name} is a plain folder of images ({where}), all normal, no test set",
        )  # fmt: skip
    return Layout("empty", None, f"{name} holds no images ({IMAGE_KINDS}) and no dataset files")


def class_flags(config: RunConfig) -> str | None:
    """The class flags the user gave, as typed (None when there are none)."""
    if config.protocol in ("normal-class", "anomaly-class") and config.target_class is not None:
        return f"--{config.protocol} {config.target_class}"
    if config.protocol == "paper":
        return "--protocol paper"
    if config.target_class is not None:
        return f"--target-class {config.target_class}"
    return None


def choose_data(config: RunConfig, need_train: bool = True) -> DataChoice:
    """The dataset `config` asks for: `--data` when given (checked against what `--data-dir`
    holds), else what `--data-dir` holds, else mnist. Raises DataError on a contradiction, and
    (with `need_train`) on a folder that holds no training images."""
    if config.data is not None and config.data not in DATASETS:
        raise DataError(f"unknown dataset {config.data!r}; choose one of {', '.join(DATASETS)}")
    if config.data_dir is None:
        return DataChoice(config.data or "mnist")
    if config.data == "digits":
        raise DataError(
            "--data digits ships with scikit-learn and reads no --data-dir; drop one of them"
        )
    if config.data == "folder":
        _check_no_class_flags(config, f"--data folder ({config.data_dir})")
        return DataChoice("folder")  # the folder loader names its own layout errors
    layout = detect_layout(config.data_dir)
    if config.data is not None:
        if layout.kind != "empty" and config.data not in COMPATIBLE[layout.kind]:
            raise DataError(
                f"--data {config.data}, but {layout.description}; drop --data to use it, "
                "or point --data-dir at the dataset's files"
            )
        if config.data == "mvtec":
            _check_no_class_flags(config, f"--data mvtec ({config.data_dir})")
        return DataChoice(config.data)
    if layout.data is None:
        raise DataError(
            f"{layout.description}: expected a folder of normal images, train/ (+ test/), an "
            "MVTec AD category or root, or a dataset's files (see ganomaly train --help)"
        )
    if layout.data in FOLDER_DATASETS:
        _check_no_class_flags(config, layout.description)
    if need_train and layout.kind in ("labelled", "test-only"):
        raise DataError(not_a_training_folder(layout, str(config.data_dir)))
    category = None
    if layout.kind == "mvtec-root" and config.category is None:
        if len(layout.categories) > 1:
            raise DataError(
                f"{layout.description}: choose one with --category NAME "
                f"(e.g. --category {layout.categories[0]})"
            )
        category = layout.categories[0]
    chosen = f"--data {layout.data}" + (f" --category {category}" if category else "")
    return DataChoice(layout.data, f"{layout.description} -> {chosen}", category)


def _check_no_class_flags(config: RunConfig, what: str) -> None:
    flags = class_flags(config)
    if flags is not None:
        raise DataError(
            f"{flags} does not apply: {what}, without classes; drop {flags.split()[0]} (class "
            "flags are for mnist, fashion-mnist, cifar10 and digits)"
        )


def not_a_training_folder(layout: Layout, data_dir: str) -> str:
    """Why a folder cannot be trained on, and what to do, in one line."""
    if layout.kind == "labelled":
        return (
            f"{layout.description}: to train, put normal images in {data_dir}/train/ and "
            f"labelled ones in {data_dir}/test/{NORMAL}/ and {data_dir}/test/<defect>/, or "
            f"train on --data-dir {data_dir}/{NORMAL} alone"
        )
    if layout.kind == "test-only":
        return f"{layout.description}: put the normal training images in {data_dir}/train/"
    if layout.kind == "mvtec-root":
        return f"{layout.description}: use --data mvtec --category NAME, or drop --data"
    return f"{layout.description}: --data folder needs a folder of normal images"
