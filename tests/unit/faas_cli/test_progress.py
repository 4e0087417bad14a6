import io

import pytest

from faas_cli.progress import Progress, format_bytes, progress_line, summary_line


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (12_345_678, "12.3 MB"), (2.5e9, "2.5 GB"), (7e15, "7000.0 TB")],
)
def test_sizes_read_as_docker_shows_them(count: float, text: str) -> None:
    assert format_bytes(count) == text


def test_a_file_of_known_size_gets_a_bar() -> None:
    assert progress_line(5_000_000, 10_000_000, 2.0) == (
        "Uploading [============>           ]  50%  5.0 MB / 10.0 MB  2.5 MB/s"
    )
    assert progress_line(10_000_000, 10_000_000, 1.0).startswith("Uploading [" + "=" * 24 + "] 100%")


def test_a_pipe_gets_bytes_and_rate() -> None:
    assert progress_line(3_400_000, None, 2.0) == "Uploading  3.4 MB  1.7 MB/s"
    assert progress_line(0, None, 0.0) == "Uploading  0 B  -"


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_line_is_redrawn_in_place_and_ends_with_a_summary() -> None:
    out, clock = io.StringIO(), Clock()
    blocks = []
    for block in Progress(out, None, clock=clock).track([b"a" * 1_000_000, b"b" * 1_000_000, b"c" * 500_000]):
        blocks.append(block)
        clock.now += 0.25  # each block takes a quarter second to send
    assert b"".join(blocks) == b"a" * 1_000_000 + b"b" * 1_000_000 + b"c" * 500_000
    # Each redraw overwrites the last from the line's start, padded over the longer one before it.
    assert out.getvalue() == (
        "\rUploading  1.0 MB  4.0 MB/s"
        "\rUploading  2.0 MB  4.0 MB/s"
        "\rUploading  2.5 MB  3.3 MB/s"
        "\rUploaded 2.5 MB in 0.8 s (3.3 MB/s), importing"
        "\n"
    )


def test_redraws_are_rate_limited() -> None:
    out, clock = io.StringIO(), Clock()
    for _ in Progress(out, 1000, clock=clock).track([b"x"] * 1000):
        clock.now += 0.001
    assert out.getvalue().count("\r") == 10 + 1  # every 0.1 s for one second, and the summary


def test_a_failed_upload_leaves_the_line_where_it_stopped() -> None:
    def failing():
        yield b"x" * 2000
        yield b"y" * 2000
        raise OSError("cut")

    out, clock = io.StringIO(), Clock()
    with pytest.raises(OSError):
        for _ in Progress(out, None, clock=clock).track(failing()):
            clock.now += 1
    assert out.getvalue() == "\rUploading  2.0 kB  2.0 kB/s\rUploading  4.0 kB  2.0 kB/s\n"


def test_nothing_is_written_when_nothing_was_drawn() -> None:
    out = io.StringIO()
    tracked = Progress(out, None, clock=Clock()).track([b"x"])
    next(tracked)
    tracked.close()
    assert out.getvalue() == ""
    assert summary_line(0, 0.0) == "Uploaded 0 B in 0.0 s (-), importing"
