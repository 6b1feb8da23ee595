"""Parallel matrix I/O (layer 2): ``save`` and ``load`` of dense matrices as standard ``.npy``.

Each rank writes and reads its own block-cyclic piece straight to and from its place in the
file with MPI-IO: the file view is an ``MPI_Type_create_darray`` type that describes exactly
the entries a grid coordinate owns, so a file written from one grid loads on any other grid,
rank count or block size, and ``numpy.load`` reads it too.

Files are written atomically and verified:

* data goes to a temporary name in the same directory and is renamed to the final name only
  after every rank finished writing (a crash mid-write leaves no file under the final name);
* a sidecar ``<path>.meta.json`` records shape, dtype and a distribution-independent checksum;
  :func:`load` checks the header, the file size and the checksum against it, so a stale or
  damaged file never loads as a wrong matrix.  Plain ``.npy`` files written by numpy (no
  sidecar) load with the header and size checks only.

Block-sparse matrices (:class:`distmat.sparse.BlockSparseMatrix`) are saved by rank 0 as a
scipy ``.npz`` (:func:`scipy.sparse.save_npz`: BSR with the matrix's block size when it
divides both dimensions, else CSR), with the same temporary-name-then-rename and a sidecar
holding shape, dtype, block size, nonzero count and a SHA-256 of the canonical CSR arrays.
``scipy.sparse.load_npz`` reads the file.

Matrix Market files (``.mtx``) are read on rank 0 with :func:`scipy.io.mmread`: a
``coordinate`` file becomes a block-sparse matrix, an ``array`` file a dense one
(``sparse=False`` makes both dense).
"""

from __future__ import annotations

import io as _pyio
import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from mpi4py import MPI
from mpi4py.util.dtlib import from_numpy_dtype

from . import comm as _c
from .grid import ProcessGrid, as_grid
from .layout import Layout, check_block
from .matrix import DistMatrix, default_block

__all__ = ["save", "load", "save_sparse", "load_sparse", "checksum", "META_SUFFIX"]

#: Suffix of the metadata sidecar written next to each saved file.
META_SUFFIX = ".meta.json"
_FORMAT = "distmat-npy-1"

# Test hook: called on every rank after the data is written and before the rename (an
# exception here must leave no file under the final name).
_before_rename: Any = None

_MIX = np.uint64(0x9E3779B97F4A7C15)


def _local_checksum(local: np.ndarray, rows: np.ndarray, cols: np.ndarray, ncols: int) -> int:
    """Sum over local entries of hash(global index, value bits), modulo 2**64."""
    if local.size == 0:
        return 0
    a = np.ascontiguousarray(local)
    itemsize = a.dtype.itemsize
    word = {4: np.uint32, 8: np.uint64, 16: np.uint64}[itemsize if a.dtype.kind != "c"
                                                      else itemsize // 2]
    bits = a.view(word).astype(np.uint64)  # complex: (real, imag) pairs side by side
    per = bits.shape[1] // a.shape[1]
    lin = (rows.astype(np.uint64)[:, None] * np.uint64(ncols)
           + cols.astype(np.uint64)[None, :])
    lin = np.repeat(lin, per, axis=1) * np.uint64(per) + np.tile(
        np.arange(per, dtype=np.uint64), a.shape[1])[None, :]
    with np.errstate(over="ignore"):
        key = (lin + np.uint64(1)) * _MIX
        key ^= key >> np.uint64(29)
        h = (bits ^ (bits >> np.uint64(31))) * (key | np.uint64(1))
        return int(h.sum(dtype=np.uint64))


def checksum(A: DistMatrix) -> str:
    """A checksum of ``A``'s global entries that does not depend on the distribution.

    Collective over the grid.  Returns 16 hex digits, the same on every rank and for the same
    matrix on any grid or block size.
    """
    part = _local_checksum(A.local, A.global_rows, A.global_cols, A.shape[1])
    buf = np.array([part], dtype=np.uint64)
    A.grid.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
    return f"{int(buf[0]):016x}"


def _npy_header(shape: tuple[int, ...], dtype: np.dtype, fortran: bool = False) -> bytes:
    f = _pyio.BytesIO()
    d = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran,
         "shape": tuple(shape)}
    if len(repr(d)) < 65000:
        np.lib.format.write_array_header_1_0(f, d)
    else:
        np.lib.format.write_array_header_2_0(f, d)
    return f.getvalue()


def _darray(comm_rank: int, shape: tuple[int, int], block: tuple[int, int],
            grid_shape: tuple[int, int], coords: tuple[int, int], etype: MPI.Datatype
            ) -> MPI.Datatype:
    """The file type of the entries a grid coordinate owns in a C-order ``shape`` array."""
    pr, pc = grid_shape
    rank = coords[0] * pc + coords[1]
    dt = etype.Create_darray(pr * pc, rank, list(shape),
                             [MPI.DISTRIBUTE_CYCLIC, MPI.DISTRIBUTE_CYCLIC],
                             list(block), [pr, pc], MPI.ORDER_C)
    dt.Commit()
    return dt


def _publish(comm: MPI.Comm, tmp: Path, meta_tmp: Path, path: Path,
             meta: Any) -> None:
    """Rank 0 writes the sidecar (``meta()`` gives its content), then both temporary files are
    renamed to their final names.  Each step is agreed, so a failure is raised everywhere and
    nothing appears under the final name unless every step succeeded."""
    with _c.agreed(comm):
        if comm.Get_rank() == 0:
            meta_tmp.write_text(json.dumps(meta()) + "\n")
        if _before_rename is not None:
            _before_rename()
    with _c.agreed(comm):
        if comm.Get_rank() == 0:
            os.replace(meta_tmp, Path(str(path) + META_SUFFIX))
            os.replace(tmp, path)


def _tmp_name(comm: MPI.Comm, path: Path) -> Path:
    with _c.agreed(comm):
        if comm.Get_rank() == 0 and not path.parent.is_dir():
            raise FileNotFoundError(f"cannot save to {path}: the directory {path.parent} "
                                    f"does not exist")
    name = comm.bcast(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}" if comm.Get_rank() == 0
                      else None, root=0)
    return path.with_name(name)


def save(A: DistMatrix, path: str | os.PathLike) -> None:
    """Write ``A`` to ``path`` as a standard C-order ``.npy`` file. Collective over the grid.

    Every rank writes its own blocks at their offsets in the file (MPI-IO, collective write).
    The data goes to a temporary name first and is renamed only when complete, together with
    the metadata sidecar ``path + ".meta.json"`` (shape, dtype, checksum).

    Parameters
    ----------
    A : DistMatrix
        The matrix **(global)**.
    path : str or path-like
        Destination **(global)**; conventionally ending in ``.npy``.  Its directory must exist.

    Raises
    ------
    OSError
        On every rank if the file cannot be written; no file is left under ``path``.
    """
    if not isinstance(A, DistMatrix):
        if _is_sparse(A):
            return save_sparse(A, path)
        raise TypeError(f"A must be a DistMatrix or a BlockSparseMatrix, got "
                        f"{type(A).__name__}")
    path = Path(os.fspath(path))
    comm = A.grid.comm
    with _c.operation("save"):
        total = checksum(A)
        tmp = _tmp_name(comm, path)
        meta_tmp = tmp.with_name(tmp.name + META_SUFFIX)
        header = _npy_header(A.shape, A.dtype)
        exc: Exception | None = None
        fh = None
        try:
            fh = MPI.File.Open(comm, str(tmp), MPI.MODE_WRONLY | MPI.MODE_CREATE)
        except Exception as e:  # noqa: BLE001 - agreed below
            exc = e
        _c.raise_if_any(comm, exc)
        try:
            with _c.agreed(comm):
                if comm.Get_rank() == 0:
                    fh.Write_at(0, np.frombuffer(header, dtype=np.uint8))
            _write_body(fh, A, len(header))
            fh.Close()
            fh = None
            _publish(comm, tmp, meta_tmp, path, lambda: {
                "format": _FORMAT, "shape": list(A.shape),
                "dtype": np.lib.format.dtype_to_descr(A.dtype),
                "checksum": total, "header_bytes": len(header),
                "file_bytes": len(header) + A.size * A.dtype.itemsize})
        except BaseException:
            if fh is not None:
                try:
                    fh.Close()
                except Exception:  # noqa: BLE001
                    pass
            if comm.Get_rank() == 0:
                for p in (tmp, meta_tmp):
                    try:
                        p.unlink()
                    except FileNotFoundError:
                        pass
            raise


def _write_body(fh: MPI.File, A: DistMatrix, offset: int) -> None:
    if A.size == 0:
        return
    etype = from_numpy_dtype(A.dtype)
    ftype = _darray(A.grid.rank, A.shape, A.block, A.grid.shape, A.grid.coords, etype)
    try:
        fh.Set_view(offset, etype, ftype, "native")
        fh.Write_all(np.ascontiguousarray(A.local))
    finally:
        ftype.Free()


def _read_header(path: Path) -> dict:
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:  # pragma: no cover - numpy only writes the three versions above
            raise ValueError(f"{path}: unsupported .npy version {version}")
        offset = f.tell()
    if dtype.hasobject or dtype.kind not in "biufc":
        raise TypeError(f"{path}: cannot load an array of dtype {dtype} (need numbers)")
    if len(shape) == 1:
        shape = (shape[0], 1)
    if len(shape) != 2:
        raise ValueError(f"{path}: expected a 1-D or 2-D array, the file holds shape {shape}")
    size = path.stat().st_size
    need = offset + shape[0] * shape[1] * dtype.itemsize
    if size != need:
        raise ValueError(f"{path}: file has {size} bytes but a {shape} {dtype} array needs "
                         f"{need} (truncated or damaged)")
    meta_path = Path(str(path) + META_SUFFIX)
    meta = None
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if (tuple(meta.get("shape", ())) != tuple(shape)
                or meta.get("dtype") != np.lib.format.dtype_to_descr(dtype)
                or meta.get("file_bytes") != size):
            raise ValueError(f"{path}: header (shape {tuple(shape)}, dtype {dtype}, {size} "
                             f"bytes) does not match its metadata {meta_path.name} "
                             f"(shape {meta.get('shape')}, dtype {meta.get('dtype')}, "
                             f"{meta.get('file_bytes')} bytes): the file is stale or damaged")
    return {"shape": (int(shape[0]), int(shape[1])), "fortran": bool(fortran),
            "descr": np.lib.format.dtype_to_descr(dtype), "offset": int(offset),
            "checksum": None if meta is None else meta.get("checksum")}


def load(path: str | os.PathLike, grid: ProcessGrid | None = None,
         block: tuple[int, int] | int | None = None, dtype: Any = None,
         verify: bool = True, sparse: bool | None = None) -> Any:
    """Read a matrix saved by :func:`save` (or any numeric ``.npy``, or a ``.mtx``) onto a grid.

    Collective over the grid.  Rank 0 reads the header; every rank reads its own blocks
    (MPI-IO collective read), so the file can be loaded on any grid and block size.

    Parameters
    ----------
    path : str or path-like
        A ``.npy`` file (1-D arrays load as one column), a block-sparse ``.npz`` written by
        :func:`save_sparse`, or a Matrix Market ``.mtx`` file **(global)**.
    grid : ProcessGrid, optional
        Target grid **(global)**; default :meth:`ProcessGrid.default`.
    block : tuple of int, optional
        Block size **(global)**; default :func:`distmat.matrix.default_block`.  For a
        block-sparse result, the square block size (an int), default the saved one or 64.
    dtype : dtype, optional
        Convert to this dtype **(global)**; integer files load as float64 by default.
    verify : bool
        Check the checksum recorded by :func:`save` **(global)** (header and file size are
        always checked).
    sparse : bool, optional
        For ``.mtx``: None (default) loads a ``coordinate`` file as a BlockSparseMatrix and
        an ``array`` file as a DistMatrix; False loads both dense **(global)**.

    Returns
    -------
    DistMatrix or BlockSparseMatrix

    Raises
    ------
    FileNotFoundError, ValueError, TypeError
        On every rank, naming the file and the problem.
    """
    grid = as_grid(grid)
    path = Path(os.fspath(path))
    comm = grid.comm
    with _c.operation("load"):
        if path.suffix.lower() == ".npz":
            return load_sparse(path, grid=grid, blocksize=block, dtype=dtype, verify=verify)
        if path.suffix.lower() == ".mtx":
            return _load_mtx(path, grid, block, dtype, sparse)
        info = None
        with _c.agreed(comm):
            if comm.Get_rank() == 0:
                info = _read_header(path)
        info = comm.bcast(info, root=0)
        shape = info["shape"]
        block = check_block(block) if block is not None else default_block(shape, grid.shape)
        file_dt = np.dtype(info["descr"])
        native = file_dt.newbyteorder("=")
        lay = Layout(shape, block, grid.shape)
        local = np.empty(lay.local_shape(*grid.coords), dtype=native)
        if info["fortran"]:  # the file is the C-order transpose: read that, then transpose
            buf = np.empty(local.shape[::-1], dtype=native)
            _read_body(comm, path, info["offset"], buf, shape[::-1], block[::-1],
                       grid.shape[::-1], grid.coords[::-1])
            local = buf.T.copy()
        else:
            _read_body(comm, path, info["offset"], local, shape, block, grid.shape,
                       grid.coords)
        if not file_dt.isnative:
            local = local.byteswap().view(native)  # raw bytes were stored non-native
        A = DistMatrix._wrap(local, shape, block, grid)
        if verify and info["checksum"] is not None:
            got = checksum(A)
            if got != info["checksum"]:
                raise ValueError(f"{path}: checksum {got} does not match the recorded "
                                 f"{info['checksum']}: the file is damaged or stale")
        return _convert(A, dtype)


def _convert(A: DistMatrix, dtype: Any) -> DistMatrix:
    if dtype is not None:
        return A.astype(dtype) if np.dtype(dtype) != A.dtype else A
    if A.dtype.kind in "biu":
        return A._like(A.local.astype(np.float64))
    return A


def _read_body(comm: MPI.Comm, path: Path, offset: int, buf: np.ndarray,
               shape: tuple[int, int], block: tuple[int, int], grid_shape: tuple[int, int],
               coords: tuple[int, int]) -> None:
    if shape[0] * shape[1] == 0:
        return
    etype = from_numpy_dtype(buf.dtype if buf.dtype.kind != "b" else np.dtype(np.uint8))
    ftype = _darray(0, shape, block, grid_shape, coords, etype)
    fh = MPI.File.Open(comm, str(path), MPI.MODE_RDONLY)
    try:
        fh.Set_view(offset, etype, ftype, "native")
        fh.Read_all(buf)
    finally:
        fh.Close()
        ftype.Free()


def _load_mtx(path: Path, grid: ProcessGrid, block: Any, dtype: Any,
              sparse: bool | None) -> Any:
    from .convert import from_global

    arr = None
    with _c.agreed(grid.comm):
        if grid.rank == 0:
            import scipy.io
            import scipy.sparse

            arr = scipy.io.mmread(str(path))
            if scipy.sparse.issparse(arr) and (sparse is False or not _have_sparse()):
                arr = arr.toarray()
            if not scipy.sparse.issparse(arr):
                arr = np.asarray(arr)
            if arr.dtype.kind in "biu":
                arr = arr.astype(np.float64)
    kind, shape = grid.comm.bcast(None if arr is None else (
        "sparse" if not isinstance(arr, np.ndarray) else "dense", arr.shape), root=0)
    if kind == "sparse":
        return _scatter_sparse(arr, shape, grid, block, dtype)
    block = check_block(block) if block is not None else default_block(shape, grid.shape)
    return from_global(arr, grid=grid, block=block, dtype=dtype)


# --------------------------------------------------------------------------- block-sparse

_SPARSE_FORMAT = "distmat-sparse-npz-1"


def _have_sparse() -> bool:
    try:
        import distmat.sparse  # noqa: F401
    except ImportError:
        return False
    return True


def _is_sparse(A: Any) -> bool:
    try:
        from .sparse.bsr import BlockSparseMatrix
    except ImportError:
        return False
    return isinstance(A, BlockSparseMatrix)


def _sparse_digest(S: Any) -> str:
    """SHA-256 (16 hex digits) of the canonical CSR arrays of a scipy sparse matrix."""
    import hashlib

    c = S.tocsr(copy=True)
    c.eliminate_zeros()
    c.sum_duplicates()
    c.sort_indices()
    h = hashlib.sha256()
    h.update(repr((tuple(c.shape), c.dtype.str)).encode())
    for a in (c.indptr.astype(np.int64), c.indices.astype(np.int64), c.data):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def save_sparse(S: Any, path: str | os.PathLike) -> None:
    """Write a block-sparse matrix to ``path`` (a scipy ``.npz``). Collective over the grid.

    The blocks are gathered to rank 0, which writes ``scipy.sparse.save_npz`` output (BSR
    with block ``(bs, bs)`` when ``bs`` divides both dimensions, else CSR) to a temporary
    name and renames it, with a sidecar ``path + ".meta.json"``.  ``path`` should end in
    ``.npz`` (scipy appends it otherwise, so it is required).
    """
    import scipy.sparse

    if not _is_sparse(S):
        raise TypeError(f"S must be a distmat.sparse.BlockSparseMatrix, got {type(S).__name__}")
    path = Path(os.fspath(path))
    if path.suffix != ".npz":
        raise ValueError(f"a block-sparse matrix is saved as .npz; got path {str(path)!r}")
    comm = S.grid.comm
    with _c.operation("save"):
        G = S.gather(root=0, format="bsr")
        tmp = _tmp_name(comm, path)
        tmp = tmp.with_name(tmp.name + ".npz")
        meta_tmp = tmp.with_name(tmp.name + META_SUFFIX)
        try:
            def meta() -> dict:
                scipy.sparse.save_npz(str(tmp), G, compressed=False)
                return {"format": _SPARSE_FORMAT, "shape": list(S.shape),
                        "dtype": np.lib.format.dtype_to_descr(S.dtype),
                        "blocksize": int(S.bs), "nnz": int(G.nnz),
                        "checksum": _sparse_digest(G)}

            _publish(comm, tmp, meta_tmp, path, meta)
        except BaseException:
            if comm.Get_rank() == 0:
                for p in (tmp, meta_tmp):
                    try:
                        p.unlink()
                    except FileNotFoundError:
                        pass
            raise


def load_sparse(path: str | os.PathLike, grid: ProcessGrid | None = None,
                blocksize: Any = None, dtype: Any = None, verify: bool = True) -> Any:
    """Read a block-sparse matrix from a ``.npz`` (scipy format) or ``.mtx``. Collective.

    Parameters
    ----------
    path : str or path-like
        The file **(global)**.
    grid : ProcessGrid, optional
        **(global)**; default :meth:`ProcessGrid.default`.
    blocksize : int, optional
        Square block size **(global)**; default the saved one, else 64 (at most the larger
        dimension).
    dtype : dtype, optional
        **(global)**; default the file's (integers become float64).
    verify : bool
        Check the SHA-256 recorded by :func:`save_sparse` **(global)**.
    """
    grid = as_grid(grid)
    path = Path(os.fspath(path))
    comm = grid.comm
    with _c.operation("load"):
        G = None
        meta_bs = None
        with _c.agreed(comm):
            if comm.Get_rank() == 0:
                import scipy.io
                import scipy.sparse

                if path.suffix.lower() == ".mtx":
                    G = scipy.sparse.coo_array(scipy.io.mmread(str(path)))
                else:
                    G = scipy.sparse.load_npz(str(path))
                meta_path = Path(str(path) + META_SUFFIX)
                if meta_path.exists():
                    meta = json.loads(meta_path.read_text())
                    meta_bs = meta.get("blocksize")
                    if tuple(meta.get("shape", ())) != tuple(G.shape) or (
                            verify and meta.get("checksum") != _sparse_digest(G)):
                        raise ValueError(f"{path}: contents do not match {meta_path.name} "
                                         f"(shape or checksum): the file is stale or damaged")
                if G.dtype.kind in "biu":
                    G = G.astype(np.float64)
        shape, meta_bs = comm.bcast(None if G is None else (G.shape, meta_bs), root=0)
        if blocksize is None and meta_bs is not None:
            blocksize = meta_bs
        return _scatter_sparse(G, shape, grid, blocksize, dtype)


def _scatter_sparse(G: Any, shape: tuple[int, int], grid: ProcessGrid, blocksize: Any,
                    dtype: Any) -> Any:
    from .sparse import from_scipy

    if blocksize is None:
        blocksize = max(1, min(64, max(shape)))
    elif isinstance(blocksize, (tuple, list)):
        blocksize = blocksize[0] if len(blocksize) == 2 and blocksize[0] == blocksize[1] \
            else blocksize
    return from_scipy(G, blocksize=blocksize, grid=grid, root=0, dtype=dtype)
