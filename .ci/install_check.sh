#!/usr/bin/env bash
# Install checks: the package builds, and the built wheel works where users install it.
#
#   (a) `python -m build` makes an sdist and a wheel (from the sdist), with the package data;
#   (b) a fresh venv WITHOUT torch (numpy, Pillow, onnxruntime, then the wheel with --no-deps):
#       `ganomaly-onnx predict` scores the images `ganomaly predict` scores, within 1e-4, and
#       reports a truncated PNG as an error row; torch really is absent; `ganomaly` itself
#       says in one line that it needs PyTorch and that `ganomaly-onnx` serves exported models;
#   (c) a fresh venv WITH torch and the wheel's [serve,export] extras: `ganomaly --help`,
#       `train`, `predict`, and `serve` (the web page and its static files are served).
#
# Usage: .ci/install_check.sh   (MAIN_PYTHON: a Python with this package's dev, export and
# serve extras and torch, default .venv/bin/python as `make env` makes it; PYTHON: the
# interpreter the fresh venvs are made from, default python3; TORCH: default torch==2.13.0).
# Exits non-zero when any check fails; every check prints what it checks and PASS or FAIL.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MAIN_PYTHON=${MAIN_PYTHON:-$ROOT/.venv/bin/python}
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ganomaly-install-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
FAILED=()
STARTED=$SECONDS

say() { printf '\n== [%d s] %s\n' "$((SECONDS - STARTED))" "$*"; }
# pip_install PYTHON ARGS...: pip's output goes to a log, shown only when it fails.
pip_install() {
    local python=$1
    shift
    "$python" -m pip install --quiet "$@" >"$WORK/pip.log" 2>&1 \
        || { tail -20 "$WORK/pip.log"; echo "FAIL: pip install $*"; exit 1; }
}
# check DESCRIPTION COMMAND...: run it, print PASS/FAIL, remember failures and go on.
check() {
    local what=$1
    shift
    if "$@"; then
        echo "PASS: $what"
    else
        echo "FAIL: $what"
        FAILED+=("$what")
    fi
}
# The repository's own code with the main environment's torch (as `make test` runs it).
main_ganomaly() { PYTHONPATH="$ROOT" "$MAIN_PYTHON" -m ganomaly "$@"; }
# COMMAND... exits with status $EXPECTED (predict exits 1 when some files failed).
exits_with() {
    local expected=$1 status=0
    shift
    "$@" || status=$?
    if [ "$status" != "$expected" ]; then
        echo "exit status $status, expected $expected: $*"
        return 1
    fi
}

if [ ! -x "$MAIN_PYTHON" ]; then
    echo "install_check: no $MAIN_PYTHON: run 'make env' first, or set MAIN_PYTHON" >&2
    exit 2
fi

say "(a) python -m build: an sdist, and a wheel built from it"
"$MAIN_PYTHON" -m build --version >/dev/null 2>&1 || pip_install "$MAIN_PYTHON" build
"$MAIN_PYTHON" -m build --outdir "$WORK/dist" "$ROOT" >"$WORK/build.log" 2>&1 \
    || { tail -30 "$WORK/build.log"; echo "FAIL: python -m build"; exit 1; }
WHEEL=$(ls "$WORK"/dist/ganomaly-*.whl)
SDIST=$(ls "$WORK"/dist/ganomaly-*.tar.gz)
echo "built $(basename "$SDIST") and $(basename "$WHEEL")"
"$MAIN_PYTHON" -m zipfile -l "$WHEEL" >"$WORK/wheel-files.txt"
wheel_has() { grep -q "$1" "$WORK/wheel-files.txt"; }
for member in ganomaly/py.typed ganomaly/static/index.html ganomaly/static/app.js \
    ganomaly/static/style.css ganomaly/onnx_runtime.py "dist-info/licenses/LICENSE\|dist-info/LICENSE"; do
    check "the wheel holds $member" wheel_has "$member"
done
check "the sdist holds LICENSE" bash -c "tar -tzf '$SDIST' | grep -q '/LICENSE$'"

say "a tiny digits model, trained and exported with the repository's code"
main_ganomaly train --data digits --normal-class 0 --epochs 1 --ngf 8 --nz 16 --image-size 16 \
    --no-progress --out "$WORK/run" >"$WORK/train.log" 2>&1 \
    || { tail -20 "$WORK/train.log"; echo "FAIL: training the tiny model"; exit 1; }
main_ganomaly export "$WORK/run" --format onnx --out "$WORK/model.onnx"
# Real digits as RGB PNGs (40x40) and grey JPEGs (31x23), then a truncated PNG.
PYTHONPATH="$ROOT" "$MAIN_PYTHON" -c \
    "import sys, pathlib; from tests._trained import sample_images; sample_images(pathlib.Path(sys.argv[1]))" \
    "$WORK/images"
GOOD_PNG=$(ls "$WORK"/images/*.png | head -1)
head -c "$(($(wc -c <"$GOOD_PNG") / 2))" "$GOOD_PNG" >"$WORK/images/truncated.png"
echo "images: $(ls "$WORK/images" | tr '\n' ' ')"

say "(b) a venv without torch: numpy, Pillow, onnxruntime, then the wheel with --no-deps"
"$PYTHON" -m venv "$WORK/venv-onnx"
ONNX_BIN=$WORK/venv-onnx/bin
pip_install "$ONNX_BIN/python" numpy pillow onnxruntime
pip_install "$ONNX_BIN/python" --no-deps "$WHEEL"
cd "$WORK"  # from here on, the repository's ganomaly/ folder is never on sys.path
check "torch cannot be imported there" exits_with 1 "$ONNX_BIN/python" -c "import torch" 2>/dev/null
check "ganomaly-onnx predict: exit 1 (one truncated file), CSV written" exits_with 1 \
    "$ONNX_BIN/ganomaly-onnx" predict "$WORK/model.onnx" "$WORK/images" --csv "$WORK/onnx.csv"
check "ganomaly predict (main venv, torch): exit 1 (one truncated file)" exits_with 1 \
    main_ganomaly predict "$WORK/run" "$WORK/images" --csv "$WORK/torch.csv" --no-progress
check "the two CSVs agree (scores within 1e-4 relative; the truncated PNG is an error row)" \
    "$ONNX_BIN/python" "$ROOT/.ci/compare_predictions.py" "$WORK/onnx.csv" "$WORK/torch.csv" \
    "$WORK/images/truncated.png"
no_traceback_failure() {
    local status=0
    "$ONNX_BIN/ganomaly" --help >"$WORK/help.out" 2>"$WORK/help.err" || status=$?
    echo "ganomaly --help without torch: exit $status, stderr: $(head -c 300 "$WORK/help.err")"
    [ "$status" = 2 ] && [ "$(wc -l <"$WORK/help.err")" = 1 ] \
        && grep -q "needs PyTorch.*ganomaly-onnx" "$WORK/help.err"
}
check "ganomaly --help without torch: exit 2 and one line naming ganomaly-onnx" \
    no_traceback_failure

say "(c) a venv with $TORCH, then the wheel with its [serve,export] extras"
"$PYTHON" -m venv "$WORK/venv-torch"
TORCH_BIN=$WORK/venv-torch/bin
pip_install "$TORCH_BIN/python" "$TORCH"
pip_install "$TORCH_BIN/python" "$WHEEL[serve,export]"
installed_from_wheel() {
    "$TORCH_BIN/python" -c "import ganomaly, sys; sys.exit(not ganomaly.__file__.startswith(sys.prefix))"
}
check "ganomaly is imported from the venv's site-packages" installed_from_wheel
check "ganomaly --help" bash -c "'$TORCH_BIN/ganomaly' --help >/dev/null"
check "ganomaly train --data digits --epochs 1" "$TORCH_BIN/ganomaly" train --data digits \
    --normal-class 0 --epochs 1 --ngf 8 --nz 16 --image-size 16 --no-progress \
    --out "$WORK/run-wheel"
check "ganomaly predict: exit 1 (one truncated file), CSV written" exits_with 1 \
    "$TORCH_BIN/ganomaly" predict "$WORK/run-wheel" "$WORK/images" --csv "$WORK/wheel.csv" \
    --no-progress
check "ganomaly serve: GET / and the page's /static/ files" "$TORCH_BIN/python" \
    "$ROOT/.ci/check_web_page.py" "$TORCH_BIN/ganomaly" "$WORK/run-wheel" "$ROOT/ganomaly/static"

site_packages() { "$1" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"; }
echo "installed size (du -sh site-packages): without torch $(du -sh "$(site_packages "$ONNX_BIN/python")" | cut -f1), with torch and [serve,export] $(du -sh "$(site_packages "$TORCH_BIN/python")" | cut -f1)"
say "install checks done"
if [ ${#FAILED[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${FAILED[@]}"
    exit 1
fi
echo "all install checks passed"
