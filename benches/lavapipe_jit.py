#!/usr/bin/env python3
"""The machine code lavapipe (llvmpipe) compiled for each pipeline a run used, from Mesa's
shader cache: Debian's Mesa has GALLIVM_DEBUG compiled out, but llvmpipe stores each shader's
LLVM object file in the cache, zstd-compressed after a small header.

    MESA_SHADER_CACHE_DIR=/tmp/jit WGUNET_KERNELS=cpu cargo bench --bench kernels
    benches/lavapipe_jit.py /tmp/jit /tmp/jit-asm

writes one NAME.s (objdump -d) per pipeline into the output folder and prints, for each, what
to look for: instructions, vector stores to the stack (spilled sums), per-lane load loops
(`cmp $0x8`: a storage load is a loop over the 8 lanes), permutes (subgroup broadcasts) and
vmulps (each fma() is a vmulps and a vaddps). Needs zstd and objdump.
"""
import os
import re
import subprocess
import sys


def objects(cache_dir):
    for root, _, files in os.walk(cache_dir):
        for name in sorted(files):
            data = open(os.path.join(root, name), 'rb').read()
            start = data.find(b'\x28\xb5\x2f\xfd')  # zstd frame magic
            if start < 0:
                continue
            blob = subprocess.run(['zstd', '-d', '-c'], input=data[start:], capture_output=True).stdout
            elf = blob.find(b'\x7fELF')
            if elf >= 0:
                yield name, blob[elf:]


def main():
    cache_dir, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    counts = {
        'stack stores': re.compile(r'vmov\w+\s+%[yz]mm\d+,-?0x[0-9a-f]+\(%rsp\)'),
        'lane loops': re.compile(r'cmp\s+\$0x8,'),
        'permutes': re.compile(r'vperm'),
        'vmulps': re.compile(r'vmulps'),
    }
    for name, elf in objects(cache_dir):
        obj = os.path.join(out_dir, name + '.o')
        open(obj, 'wb').write(elf)
        asm = subprocess.run(['objdump', '-d', '--no-show-raw-insn', obj], capture_output=True, text=True).stdout
        open(os.path.join(out_dir, name + '.s'), 'w').write(asm)
        insns = sum(1 for line in asm.splitlines() if re.match(r'\s+[0-9a-f]+:\t', line))
        found = ', '.join(f'{k} {len(r.findall(asm))}' for k, r in counts.items())
        print(f'{name}: {insns} instructions, {found}')


main()
