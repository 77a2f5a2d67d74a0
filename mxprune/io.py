"""Atomic file writing: every file mxprune writes appears whole or not at all."""
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Iterator


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary path beside `path`; on success it is fsynced and renamed over `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_with(path: str, writer: Callable[[str], Any]) -> None:
    """Calls writer(tmp_path) (e.g. net.save_parameters) and renames the result into place."""
    with atomic_path(path) as tmp:
        writer(tmp)


def write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, 'w', encoding='utf-8') as f:
            f.write(text)


def write_json(path: str, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + '\n')


def append_line(path: str, obj: Any) -> None:
    """Appends one JSON line; a line cut by a crash is skipped by read_jsonl."""
    with open(path, 'a', encoding='utf-8') as f:
        f.write(json.dumps(obj) + '\n')
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str) -> list:
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path, encoding='utf-8') as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


def publish_dir(tmp_dir: str, final_dir: str) -> None:
    """Moves a finished temporary folder into place, replacing an older one of the same name."""
    old = None
    if os.path.exists(final_dir):
        old = final_dir + '.old'
        if os.path.exists(old):
            shutil.rmtree(old)
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    if old:
        shutil.rmtree(old)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()
