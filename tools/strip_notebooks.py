"""Strips outputs, execution counts and run metadata from notebooks, so they are committed clean.

    python tools/strip_notebooks.py [NOTEBOOK.ipynb ...]      (default: colab/*.ipynb)
    python tools/strip_notebooks.py --check                   (exit 1, naming them, if any has outputs)
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUN_METADATA = ("execution", "collapsed", "scrolled")  # per-cell keys a run or a viewer adds


def outputs_left(book: nbformat.NotebookNode) -> list[str]:
    """Ids of the code cells that still carry outputs, an execution count or run metadata."""
    return [cell.get("id", str(i)) for i, cell in enumerate(book.cells) if cell.cell_type == "code"
            and (cell.outputs or cell.execution_count is not None or any(k in cell.metadata for k in RUN_METADATA))]


def strip(book: nbformat.NotebookNode) -> nbformat.NotebookNode:
    for cell in book.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        for key in RUN_METADATA:
            cell.metadata.pop(key, None)
    book.metadata.pop("widgets", None)
    return book


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=pathlib.Path, help="notebooks (default: colab/*.ipynb)")
    parser.add_argument("--check", action="store_true", help="only report notebooks with outputs")
    args = parser.parse_args(argv)
    dirty = []
    for path in args.paths or sorted((ROOT / "colab").glob("*.ipynb")):
        book = nbformat.read(path, as_version=4)
        if outputs_left(book):
            dirty.append(str(path))
            if not args.check:
                nbformat.write(strip(book), path)
    verb = "have outputs" if args.check else "stripped"
    print(f"{verb}: {', '.join(dirty)}" if dirty else "no outputs in any notebook")
    return 1 if args.check and dirty else 0


if __name__ == "__main__":
    sys.exit(main())
