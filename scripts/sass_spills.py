#!/usr/bin/env python3
"""Local-memory spills (LDL / STL) of a CUDA cubin, by source line, without nvdisasm.

The development machine has nvcc and ptxas but no cuobjdump or nvdisasm; `ptxas -v` gives only a
kernel's spill bytes. This reads the cubin's SASS and its line table (`-lineinfo`) and lists every
LDL and STL with the source line it belongs to and its instruction index, so that a spill can be
told apart as per stage (inside a loop) or per item. sm_90 encodes an instruction in 16 bytes with
the opcode in the low 12 bits: 0x983 is LDL, 0x387 is STL (checked against nvdisasm's listing of
the fused kernels: the same lines and counts).

    nvcc ... -lineinfo -cubin src/cuda/instances/dense_fp8_h64.cu -o /tmp/k.cubin
    python3 scripts/sass_spills.py /tmp/k.cubin [kernel-name-substring] [--all]

--all also prints each spill's instruction index (compare with the loop's branch to see whether
it runs per iteration). Needs Debian's python3-pyelftools.
"""
import bisect
import collections
import struct
import sys

from elftools.dwarf.structs import DWARFStructs
from elftools.elf.elffile import ELFFile

OPS = {0x983: "LDL", 0x387: "STL"}


def line_rows(elf):
    """(address, file, line) of every row of every line program in .debug_line, sorted."""
    dwarf = elf.get_dwarf_info(relocate_dwarf_sections=False)
    sec = elf.get_section_by_name(".debug_line")
    if sec is None:
        sys.exit("no .debug_line: compile with -lineinfo")
    data, off, rows = sec.data(), 0, []
    while off < len(data):
        length, version = struct.unpack_from("<IH", data, off)
        structs = DWARFStructs(little_endian=True, dwarf_format=32, address_size=8,
                               dwarf_version=version)
        # (no .debug_info to hang the line programs on: parse each at its offset, through
        # pyelftools' internal parser)
        prog = dwarf._parse_line_program_at_offset(off, structs)
        files = prog.header["file_entry"]
        for entry in prog.get_entries():
            st = entry.state
            if st is None:
                continue
            name = files[st.file - 1].name.decode() if 0 < st.file <= len(files) else "?"
            rows.append((st.address, name.split("/")[-1], st.line))
        off += length + 4
    rows.sort()
    return rows


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if not args:
        sys.exit(__doc__)
    show_all = "--all" in sys.argv
    want = args[1] if len(args) > 1 else ""
    elf = ELFFile(open(args[0], "rb"))
    rows = line_rows(elf)
    addrs = [r[0] for r in rows]
    for sec in elf.iter_sections():
        if not sec.name.startswith(".text.") or want not in sec.name:
            continue
        code = sec.data()
        found = collections.defaultdict(list)
        for i in range(0, len(code), 16):
            op = struct.unpack_from("<Q", code, i)[0] & 0xFFF
            if op in OPS:
                j = bisect.bisect_right(addrs, i) - 1
                where = f"{rows[j][1]}:{rows[j][2]}" if j >= 0 else "?"
                found[(where, OPS[op])].append(i // 16)
        n_ld = sum(len(v) for (w, k), v in found.items() if k == "LDL")
        n_st = sum(len(v) for (w, k), v in found.items() if k == "STL")
        print(f"{sec.name[6:]}: {len(code) // 16} instructions, {n_ld} LDL, {n_st} STL")
        for (where, kind), idx in sorted(found.items(), key=lambda x: x[1][0]):
            extra = " at " + ",".join(map(str, idx)) if show_all else ""
            print(f"  {kind} x{len(idx)}  {where}{extra}")


if __name__ == "__main__":
    main()
