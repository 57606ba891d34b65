#!/usr/bin/env bash
# wgunet and the PyTorch peer side by side, in one run, on the software adapter (lavapipe) and
# the CPU: the same U-Net (RGB, transposed-conv decoder, BCE, Adam) at each configuration,
# printed as one Markdown table with ratios. Not part of CI. See BENCHMARKS.md.
#
#   benches/peers.sh [--baseline PATH] [--peer PATH] [--wgunet PATH] [--configs LIST]
#                    [--threads N] [--warmup N] [--steps N] [--venv DIR]
#
#   --baseline PATH  a second wgunet binary (e.g. a build of an earlier commit): adds
#                    "previous build" columns and the speed-up over it
#   --peer PATH      the PyTorch benchmark (default: ../shared/peers/torch_unet_bench.py)
#   --wgunet PATH    the wgunet binary to measure (default: a release build of this tree)
#   --configs LIST   SIZE:FILTERS:BATCH,... (default 64:8:8,128:32:8)
#   --threads N      PyTorch threads (default 2: the development machine's cores)
#   --warmup N, --steps N   steps before timing, steps timed (default 2 and 5, for both)
#   --venv DIR       virtual environment for torch (default .venv-torch; created, and torch
#                    installed from PyPI, when torch does not import from it)
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"

baseline="" peer="../shared/peers/torch_unet_bench.py" wgunet="" configs="64:8:8,128:32:8"
threads=2 warmup=2 steps=5 venv=".venv-torch"
while [ $# -gt 0 ]; do
  case "$1" in
    --baseline) baseline=$2; shift 2 ;;
    --peer) peer=$2; shift 2 ;;
    --wgunet) wgunet=$2; shift 2 ;;
    --configs) configs=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --venv) venv=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "peers.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done
[ -f "$peer" ] || { echo "peers.sh: no PyTorch benchmark at $peer (give --peer PATH)" >&2; exit 2; }
[ -z "$baseline" ] || [ -x "$baseline" ] || { echo "peers.sh: --baseline $baseline is not an executable" >&2; exit 2; }
if [ -z "$wgunet" ]; then
  cargo build --release --locked --bin wgunet >&2
  wgunet=target/release/wgunet
fi
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}

# PyTorch from PyPI. Its Linux wheel needs the nvidia-* CUDA libraries even to import on a CPU
# (installing torch alone with --no-deps fails at `import torch`), so this is the full ~5 GB.
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  echo "installing torch into $venv (several GB, once)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet torch >&2
fi

log=$(mktemp -d)
load() { uptime | sed 's/.*load average: //'; }
# Field of a `wgunet bench` output line: the word before UNIT on the line starting with KEY.
field() { awk -v key="$2" -v unit="$3" '$1 == key { for (i = 2; i <= NF; i++) if ($i ~ "^" unit) { print $(i-1); exit } }' "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "–"; else printf "%.3g", a / b }'; }
torch_field() { "$venv/bin/python" -c 'import json,sys; r=json.loads([l for l in open(sys.argv[1]) if l.startswith("RESULT ")][-1][7:]); print(r[sys.argv[2]])' "$1" "$2"; }

rows=()
for config in ${configs//,/ }; do
  IFS=: read -r size filters batch <<< "$config"
  label="${size}² F${filters} b${batch}"
  bench=(bench --device cpu --arch unet --channels 3 --size "$size" --filters "$filters" --batch "$batch" --warmup "$warmup" --steps "$steps")
  echo "== $label (load before: $(load))" >&2
  "$wgunet" "${bench[@]}" > "$log/new.txt"
  cat "$log/new.txt" >&2
  if [ -n "$baseline" ]; then
    "$baseline" "${bench[@]}" > "$log/old.txt"
    cat "$log/old.txt" >&2
  fi
  "$venv/bin/python" "$peer" --variant convT --size "$size" --batch "$batch" --F "$filters" --threads "$threads" \
    --warmup "$warmup" --steps "$steps" > "$log/torch.txt"
  grep '^RESULT' "$log/torch.txt" >&2
  train=$(awk '$1 == "train:" { print $2 }' "$log/new.txt")
  infer=$(awk '$1 == "infer:" { print $2 }' "$log/new.txt")
  first=$(awk '/^first step finished/ { print $4 }' "$log/new.txt")
  per_mp=$(field "$log/new.txt" train: ms/megapixel)
  torch_train=$(printf '%.3g' "$(torch_field "$log/torch.txt" train_img_s)")
  torch_infer=$(printf '%.3g' "$(torch_field "$log/torch.txt" infer_img_s)")
  row="| $label | $train | $torch_train | $(ratio "$train" "$torch_train")"
  if [ -n "$baseline" ]; then
    old_train=$(awk '$1 == "train:" { print $2 }' "$log/old.txt")
    old_infer=$(awk '$1 == "infer:" { print $2 }' "$log/old.txt")
    row="$row | $old_train | $(ratio "$train" "$old_train")"
  fi
  row="$row | $infer | $torch_infer | $(ratio "$infer" "$torch_infer")"
  [ -n "$baseline" ] && row="$row | $old_infer | $(ratio "$infer" "$old_infer")"
  rows+=("$row | $per_mp | ${first:-–} | $(load) |")
done

echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)"
echo "wgunet: $("$wgunet" --version) ($wgunet), $(sed -n 's/^adapter: //p' "$log/new.txt"); torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)'), $threads threads"
echo "warm-up $warmup steps, $steps timed (wgunet: mean; PyTorch: median)${baseline:+; previous build: $baseline}"
echo
header="| config | wgunet train img/s | PyTorch train img/s | ratio"
rule="|---|---:|---:|---:"
if [ -n "$baseline" ]; then header="$header | previous build train img/s | speed-up"; rule="$rule|---:|---:"; fi
header="$header | wgunet infer img/s | PyTorch infer img/s | ratio"; rule="$rule|---:|---:|---:"
if [ -n "$baseline" ]; then header="$header | previous build infer img/s | speed-up"; rule="$rule|---:|---:"; fi
echo "$header | wgunet ms/megapixel | first step (s) | load 1/5/15 min after |"
echo "$rule|---:|---:|---|"
printf '%s\n' "${rows[@]}"
rm -rf "$log"
