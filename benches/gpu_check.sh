#!/usr/bin/env bash
# The GPU check: on a lent GPU machine (no Rust, no registry; python3 with torch + CUDA), in one
# call of under 8 minutes: `selftest` for every kernel variant, then a 3-epoch training run,
# `wgunet bench` and the convolution bench for the gpu variant at both GEMM register blocks
# (WGUNET_GEMM_BLOCK=8, the default, and 4; the dry run adds the cpu variant), then the PyTorch
# CUDA peer (TF32 off and on) on the same card, ending with one Markdown table. See
# BENCHMARKS.md ("GPU check").
#
# Here, first:      benches/gpu_check.sh --stage          # release builds + Vulkan loader -> .gpu/
# On the device:    bash .gpu/probe.sh bash benches/gpu_check.sh      (carry [".gpu"])
# Dry run here:     benches/gpu_check.sh --device cpu     # lavapipe, small settings, a few minutes
#
# Options: --device gpu|cpu (default gpu), --stage, --shared DIR (default ../shared),
#          --dir DIR (the staged folder, default .gpu). Full outputs go to $OUT/gpu_check.tar.gz
#          (the device tool brings $OUT back, a few files at most) or a temporary folder.
set -uo pipefail
cd "$(dirname "$0")/.."
device=gpu stage=0 shared=../shared dir=.gpu
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    --stage) stage=1; shift ;;
    --shared) shared=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done

if [ "$stage" = 1 ]; then
  # What the check runs, as ../shared/gpu/stage.sh lays it out (bin/, lib/, probe.sh), without
  # the test executables it does not need (minutes of release builds, most of the 64 MiB carry).
  set -e
  rm -rf "$dir" && mkdir -p "$dir/bin" "$dir/lib" "$dir/peers" "$dir/deb"
  cargo build --locked --release --bin wgunet
  cp target/release/wgunet "$dir/bin/"
  # The convolution bench's executable, as cargo reports it.
  cargo bench --locked --bench kernels --no-run --message-format=json | python3 -c 'import sys, json
for l in sys.stdin:
    m = json.loads(l) if l.startswith("{") else {}
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "kernels": print(m["executable"])' \
    | xargs -I{} cp {} "$dir/bin/kernels-bench"
  # The GPU machine may have no Vulkan loader: Debian's, and vulkaninfo for probe.sh.
  ( cd "$dir/deb" && { apt-get download libvulkan1 vulkan-tools >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get download libvulkan1 vulkan-tools >/dev/null; }; } )
  for d in "$dir"/deb/*.deb; do dpkg-deb -x "$d" "$dir/deb/x"; done
  cp -L "$dir/deb/x/usr/lib/x86_64-linux-gnu/libvulkan.so.1" "$dir/lib/"
  cp "$dir/deb/x/usr/bin/vulkaninfo" "$dir/bin/"
  rm -rf "$dir/deb"
  strip "$dir"/bin/*
  cp "$shared/gpu/probe.sh" "$dir/"
  cp "$shared/peers/torch_unet_bench.py" "$dir/peers/"
  du -sh "$dir"
  exit 0
fi

case "$device" in
  # On a GPU a kernel takes about as long as a submission's round trip: 20 launches a
  # submission time the kernels, 2 (the H200's first run) mostly the round trip.
  # On a GPU the cpu variant runs the portable kernels, the gpu variant's with 4×4 blocks: not
  # worth the time. Variants are KERNELS:BLOCK.
  gpu) configs="128:32:8 256:32:4" kernel_models="128:32" kernel_batch=8 kernel_reps=20 warmup=3 steps=10
       variants="gpu:8 gpu:4" ;;
  # Lavapipe runs the same commands at sizes that finish in a few minutes.
  cpu) configs="32:8:4 64:8:2" kernel_models="32:8" kernel_batch=2 kernel_reps=2 warmup=1 steps=2
       variants="cpu:8 gpu:8 gpu:4" ;;
  *) echo "gpu_check.sh: --device gpu or cpu" >&2; exit 2 ;;
esac
wgunet=$dir/bin/wgunet kernels_bench=$dir/bin/kernels-bench peer=$dir/peers/torch_unet_bench.py
for f in "$wgunet" "$kernels_bench" "$peer"; do
  [ -e "$f" ] || { echo "gpu_check.sh: $f is missing: run benches/gpu_check.sh --stage first" >&2; exit 2; }
done
logs=${OUT:-$(mktemp -d)}/gpu_check
mkdir -p "$logs"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
# NVIDIA's ICD file names its GLX library, which returns no vkCreateInstance without a display
# (the H200 of 2026-12-04, in a container): where wgunet sees no GPU but an NVIDIA device node
# exists, `wgunet devices` prints the two commands that load the same driver through its EGL
# library. Run them.
if [ "$device" = gpu ]; then
  fix=$("$wgunet" devices 2>/dev/null | sed -n "s/^  \(echo '.*' > [^ ]*\|export VK_ICD_FILENAMES=[^ ]*\)$/\1/p")
  if [ -n "$fix" ]; then
    printf '== no GPU adapter through %s; wgunet advises:\n%s\n' "${VK_ICD_FILENAMES:-the default ICD files}" "$fix" >&2
    eval "$fix"
  fi
fi
start=$(date +%s) budget=450
rows=() notes=()
# Runs "$@" with a time limit (cut to what is left of the whole check's budget), its output in
# $logs/NAME.txt; notes a failure or a skip.
step() {
  local name=$1 limit=$2; shift 2
  local left=$((budget - ($(date +%s) - start)))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 15 ]; then notes+=("$name: skipped, the ${budget} s budget is spent"); return 1; fi
  echo "== $name ($(($(date +%s) - start)) s in): $*" >&2
  timeout "$limit" "$@" > "$logs/$name.txt" 2>&1
  local rc=$?
  tail -4 "$logs/$name.txt" >&2
  [ $rc = 0 ] || notes+=("$name: exit $rc ($( [ $rc = 124 ] && echo "over ${limit} s" || tail -1 "$logs/$name.txt"))")
  return $rc
}

# 1. selftest: every variant in one run (each prints "N passed, M failed"), then the gpu
#    variant's other register block, whose tiles differ.
step selftest 120 "$wgunet" selftest --device "$device"
step selftest-gpu4 60 env WGUNET_GEMM_BLOCK=4 "$wgunet" selftest --device "$device" --kernels gpu
selftest=$(awk '/^selftest on / { v = $0; sub(/ \(seed.*/, "", v); sub(/.*, /, "", v) }
  / passed, [0-9]+ failed$/ { printf "%s%s: %s", sep, v, $0; sep = "; " }' "$logs/selftest.txt" "$logs/selftest-gpu4.txt")
adapter=$(sed -n 's/^selftest on \(.*\), [a-z]* kernels[^(]* (seed.*/\1/p' "$logs/selftest.txt" | head -1)

# 1b. A short training run per variant (built-in synthetic slices, fixed seed): its per-epoch
#     training loss, to compare with the same run on lavapipe (the dry run prints it; the sums'
#     order differs, so the digits drift a little an epoch). Kernel checks test one dispatch at a
#     time; this tests a whole program's dispatches in sequence (e.g. the shared split-K scratch).
losses=() runs=$(mktemp -d)
for variant in $variants; do
  IFS=: read -r kernels block <<< "$variant"
  [ "$kernels" = gpu ] && label="gpu ${block}×$block" || label=$kernels
  # The run's weights stay out of the archive; its metrics go in.
  run="$runs/$kernels$block"
  step "train-$kernels$block" 120 env WGUNET_GEMM_BLOCK="$block" "$wgunet" train --device "$device" \
    --kernels "$kernels" --no-plan --synth-count 32 --size 32 --filters 16 --batch 8 --epochs 3 --seed 7 \
    --out "$run" || continue
  cp "$run/metrics.csv" "$logs/train-$kernels$block.csv"
  losses+=("$label: $(awk -F, 'NR > 1 { printf "%s%.5f", sep, $3; sep = ", " }' "$run/metrics.csv")")
done
train_losses=$(printf '%s; ' "${losses[@]}") train_losses=${train_losses%; }

# 2. wgunet bench per variant and configuration.
for variant in $variants; do
  IFS=: read -r kernels block <<< "$variant"
  # The block only matters to the gpu variant.
  [ "$kernels" = gpu ] && label="gpu ${block}×$block" || label=$kernels
  for config in $configs; do
    IFS=: read -r size filters batch <<< "$config"
    name="bench-$kernels$block-$size-F$filters-b$batch"
    step "$name" 120 env WGUNET_GEMM_BLOCK="$block" "$wgunet" bench --device "$device" --kernels "$kernels" \
      --arch unet --channels 3 --size "$size" --filters "$filters" --batch "$batch" --warmup "$warmup" \
      --steps "$steps" || continue
    f=$logs/$name.txt
    # train:   IMG images/s, MS ms/step, MP ms/megapixel, GF GFLOP/s (analytic, 3x forward)
    read -r ips _ ms _ mp _ gflops _ <<< "$(awk '$1 == "train:" { $1 = ""; gsub(",", ""); print }' "$f")"
    infer=$(awk '$1 == "infer:" { print $2 }' "$f")
    first=$(awk '/^first step finished/ { print $4 }' "$f")
    rows+=("| wgunet | $label | ${size}² F$filters b$batch | $ips | $ms | $mp | $gflops | $infer | $first |")
  done
done

# The card's fp32 (non-tensor-core) peak in TFLOP/s, from NVIDIA's data sheets.
card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
case "$card" in
  *H200*|*"H100 80GB HBM3"*|*H100*SXM*) peak=67 ;;
  *H100*PCIe*|*"H100 PCIe"*) peak=51 ;;
  *H100*NVL*) peak=60 ;;
  *A100*) peak=19.5 ;;
  *) peak="" ;;
esac

# 3. Convolutions alone at the U-Net's layer shapes: GFLOP/s of each pass over all layers, per
#    variant as above (the bench times the cpu variant's, on a GPU the portable, kernels too
#    unless WGUNET_KERNELS says gpu).
conv_rows=()
for variant in $variants; do
  IFS=: read -r kernels block <<< "$variant"
  name="kernels-$kernels$block"
  step "$name" 120 env WGUNET_KERNELS="$kernels" WGUNET_GEMM_BLOCK="$block" WGUNET_BENCH_DEVICE="$device" \
    WGUNET_BENCH_MODELS="$kernel_models" WGUNET_BENCH_BATCH="$kernel_batch" WGUNET_BENCH_REPS="$kernel_reps" \
    "$kernels_bench" || continue
  # Rows "KERNELS  OP  PASS  all layers  LAYERS  MS  GFLOP/s", columns two or more spaces apart.
  while read -r line; do conv_rows+=("$line"); done < <(awk -v peak="$peak" -v block="$block" '/ all layers / {
      n = split($0, w, /  +/)
      share = peak == "" ? "–" : sprintf("%.1f %%", w[n] / (peak * 1000) * 100)
      label = w[1] == "gpu" ? w[1] " " block "×" block : w[1]
      printf "| %s | %s %s | %s | %s | %s |\n", label, w[2], w[3], w[n-1], w[n], share }' "$logs/$name.txt")
done

# 4. PyTorch on the same card: fp32 (TF32 off), then TF32 on. Without CUDA (the dry run), the
#    CPU with 2 threads from the local venv, if torch is there at all.
python=python3
[ -x .venv-torch/bin/python ] && ! python3 -c "import torch" 2>/dev/null && python=.venv-torch/bin/python
torch_device=$("$python" -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')" 2>/dev/null)
if [ -z "$torch_device" ]; then
  notes+=("PyTorch: not importable with $python, skipped")
else
  [ "$torch_device" = cuda ] && modes="fp32 tf32" || modes="fp32"
  for mode in $modes; do
    for config in $configs; do
      IFS=: read -r size filters batch <<< "$config"
      name="torch-$torch_device-$mode-$size-F$filters-b$batch"
      step "$name" 120 "$python" "$peer" --device "$torch_device" --variant convT --size "$size" --F "$filters" \
        --batch "$batch" --threads 2 --warmup "$warmup" --steps "$steps" $( [ "$mode" = tf32 ] && echo --tf32 ) || continue
      row=$("$python" -c 'import json, sys
r = json.loads([l for l in open(sys.argv[1]) if l.startswith("RESULT ")][-1][7:])
mp = r["batch"] * r["size"] ** 2 / 1e6
print("| %.4g | %.4g | %.4g | %.4g | %.4g | – |" % (r["train_img_s"], r["train_step_s"] * 1e3, r["train_step_s"] * 1e3 / mp, r["train_gflops"], r["infer_img_s"]))' "$logs/$name.txt")
      rows+=("| PyTorch $torch_device | $mode | ${size}² F$filters b$batch $row")
    done
  done
fi

echo
echo "## GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'), $(($(date +%s) - start)) s"
echo "adapter: ${adapter:-?}${card:+; card: $card${peak:+ (fp32 peak $peak TFLOP/s)}}; PyTorch: ${torch_device:-none}"
echo "selftest: ${selftest:-did not finish}"
echo "training loss by epoch (synthetic, seed 7): ${train_losses:-did not finish}"
echo
echo "| what | kernels / precision | config | train img/s | ms/step | ms/megapixel | train GFLOP/s | infer img/s | first step (s) |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
if [ ${#conv_rows[@]} -gt 0 ]; then
  echo
  echo "Convolutions alone (\`kernels-bench\`, unet $kernel_models batch $kernel_batch, each pass summed over the layers):"
  echo
  echo "| kernels | pass | ms per step | GFLOP/s | share of fp32 peak |"
  echo "|---|---|---:|---:|---:|"
  printf '%s\n' "${conv_rows[@]}"
fi
if [ ${#notes[@]} -gt 0 ]; then echo; printf -- '- %s\n' "${notes[@]}"; fi
# The device tool brings back only a few files from $OUT: the outputs as one archive there.
if [ -n "${OUT:-}" ] && tar -czf "$OUT/gpu_check.tar.gz" -C "$logs/.." gpu_check 2>/dev/null; then
  rm -rf "$logs"
  echo "(full outputs: \$OUT/gpu_check.tar.gz)"
else
  echo "(full outputs: $logs)"
fi
