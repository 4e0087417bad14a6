"""What ``faas new`` sends: archives read ahead from a file or once from a pipe, held layers left out."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import socket
import tarfile
import threading
from pathlib import Path

import pytest

from faas_cli.client import Client, HttpEndpoint
from faas_cli.upload import file_upload, stream_upload, tarball_upload
from faasd.images.archive import ImageArchive
from tests.unit.images.test_thin import BASE, BASE_DIFF_ID, archive_bytes


class Daemon:
    """What faasd answers to ``POST /v1/layers/lookup``, and what it was asked."""

    def __init__(self, holds: set[str]) -> None:
        self.holds = holds
        self.asked: list[list[str]] = []

    def held_layers(self, diff_ids: list[str]) -> set[str]:
        self.asked.append(diff_ids)
        return self.holds & set(diff_ids)


def members(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


@pytest.mark.parametrize("layout", ["legacy", "oci", "blobs-first"])
def test_a_file_is_sent_metadata_first_with_the_held_layer_left_out(tmp_path: Path, layout: str) -> None:
    path = tmp_path / "image.tar"
    path.write_bytes(archive_bytes(tmp_path, layout))
    daemon = Daemon({BASE_DIFF_ID})
    with open(path, "rb") as file:
        upload = file_upload(file, daemon)
        sent = b"".join(upload.blocks)
    assert len(daemon.asked) == 1 and BASE_DIFF_ID in daemon.asked[0], "one question, before any byte is sent"
    assert upload.size == len(sent) < path.stat().st_size - len(BASE) // 2
    assert upload.left_out.layers == 1 and upload.left_out.bytes > len(BASE) // 2  # OCI's is gzip
    names = members(sent)
    assert sorted(names) == sorted(members(path.read_bytes())), "every member, each once"
    metadata = {"manifest.json", "index.json"} & set(names)
    assert set(names[: len(metadata) + 2]) >= metadata, "the metadata leads"
    thin = tmp_path / "thin.tar"
    thin.write_bytes(sent)
    with ImageArchive(thin, None, 1 << 24) as archive:
        assert (archive.omitted(1), archive.omitted(2), archive.diff_id(1)) == (True, False, BASE_DIFF_ID)


def test_a_file_whose_layers_faasd_lacks_is_sent_whole_in_another_order(tmp_path: Path) -> None:
    path = tmp_path / "image.tar"
    path.write_bytes(archive_bytes(tmp_path, "legacy"))
    with open(path, "rb") as file:
        upload = file_upload(file, Daemon(set()))
        sent = b"".join(upload.blocks)
    assert upload.size == len(sent) == path.stat().st_size and upload.left_out.layers == 0
    assert members(sent)[0] != members(path.read_bytes())[0] and sorted(members(sent)) == sorted(
        members(path.read_bytes())
    )


def test_a_compressed_file_is_sent_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "image.tar.gz"
    path.write_bytes(gzip.compress(archive_bytes(tmp_path, "blobs-first")))
    daemon = Daemon({BASE_DIFF_ID})
    with open(path, "rb") as file:
        upload = file_upload(file, daemon)
        assert b"".join(upload.blocks) == path.read_bytes() and upload.size == path.stat().st_size
    assert daemon.asked == []


@pytest.mark.parametrize("layout", ["legacy", "oci", "blobs-first"])
def test_a_pipe_leaves_out_every_held_layer(tmp_path: Path, layout: str) -> None:
    """The legacy <id>/layer.tar comes before its manifest.json: it is held back while it is hashed."""
    data = archive_bytes(tmp_path, layout)
    read, write = os.pipe()
    writer = threading.Thread(target=_write_all, args=(write, data))
    writer.start()
    with open(read, "rb") as pipe:
        upload = tarball_upload(pipe, Daemon({BASE_DIFF_ID}))
        sent = b"".join(upload.blocks)
    writer.join()
    assert upload.size is None and upload.left_out.layers == 1
    assert len(sent) < len(data) - len(BASE) // 2 and members(sent) == members(data)
    thin = tmp_path / "thin.tar"
    thin.write_bytes(sent)
    with ImageArchive(thin, None, 1 << 24) as archive:
        assert (archive.omitted(1), archive.omitted(2), archive.diff_id(1)) == (True, False, BASE_DIFF_ID)


@pytest.mark.parametrize("block", [512, 4096, 1 << 20])
def test_a_pipe_sends_what_faasd_lacks_unchanged_whatever_the_blocks(tmp_path: Path, block: int) -> None:
    data = archive_bytes(tmp_path, "legacy")
    daemon = Daemon(set())
    sent = b"".join(stream_upload([data[i : i + block] for i in range(0, len(data), block)], daemon).blocks)
    assert sent == data and [BASE_DIFF_ID] in daemon.asked


def _write_all(fd: int, data: bytes) -> None:
    with open(fd, "wb") as pipe:
        pipe.write(data)


def test_a_pipe_asks_about_each_layer_once(tmp_path: Path) -> None:
    data = archive_bytes(tmp_path, "blobs-first")
    daemon = Daemon({BASE_DIFF_ID})
    b"".join(stream_upload([data[i : i + 4096] for i in range(0, len(data), 4096)], daemon).blocks)
    assert [BASE_DIFF_ID] in daemon.asked and len(daemon.asked) == len({tuple(a) for a in daemon.asked})


def answer_once(status: bytes, body: bytes) -> tuple[HttpEndpoint, threading.Thread, list[bytes]]:
    """A one-shot HTTP server on 127.0.0.1; the request it got lands in the returned list."""
    server = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def answer() -> None:
        with server:
            conn, _ = server.accept()
            with conn:
                request = conn.recv(65536)
                head, _, content = request.partition(b"\r\n\r\n")
                length = re.search(rb"Content-Length: (\d+)", head)
                while length and len(content) < int(length[1]):
                    content += conn.recv(65536)
                received.append(head + b"\r\n\r\n" + content)
                conn.sendall(b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body))

    thread = threading.Thread(target=answer)
    thread.start()
    return HttpEndpoint("http", "127.0.0.1", server.getsockname()[1]), thread, received


def test_the_lookup_sends_the_diff_ids_as_json_with_a_length() -> None:
    endpoint, thread, received = answer_once(b"200 OK", json.dumps({"held": [BASE_DIFF_ID]}).encode())
    assert Client(endpoint).held_layers([BASE_DIFF_ID, "sha256:" + "0" * 64]) == {BASE_DIFF_ID}
    thread.join()
    head, _, body = received[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/layers/lookup ") and b"Content-Length: " in head
    assert json.loads(body) == {"diff_ids": [BASE_DIFF_ID, "sha256:" + "0" * 64]}


@pytest.mark.parametrize("status", [b"404 Not Found", b"405 Method Not Allowed"])
def test_a_faasd_without_the_lookup_holds_nothing(status: bytes) -> None:
    endpoint, thread, _ = answer_once(status, b'{"error": "Not Found"}')
    assert Client(endpoint).held_layers([BASE_DIFF_ID]) == set()
    thread.join()
