"""A real Orthanc PACS on 127.0.0.1 for the tests: temporary config and storage, free ports, stopped after.

Only loopback is used: HTTP refuses remote clients, and the DICOM listener
accepts only the AE titles registered here, from 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

ORTHANC_AET = "ORTHANC"
START_TIMEOUT_S = 60.0


def require_tool(command: str, package: str) -> str:
    """The tool's path; skip when it is missing and cannot be installed here (not root), fail when root."""
    path = shutil.which(command)
    if path:
        return path
    if os.geteuid() != 0:
        pytest.skip(f"{command} not installed (Debian package {package}) and not root to install it: "
                    "run `make deps` as root")
    pytest.fail(f"{command} not installed: `make deps` installs Debian package {package} when root")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """One Orthanc process; ``peer`` is its AET@127.0.0.1:port, ``rest(path)`` its HTTP API."""

    def __init__(self, workdir: str, calling_aets: tuple[str, ...] = ("MRGAN_TF",)):
        self.binary = require_tool("Orthanc", "orthanc")
        self.workdir = workdir
        self.dicom_port, self.http_port = free_port(), free_port()
        self.storage = os.path.join(workdir, "storage")
        os.makedirs(self.storage, exist_ok=True)
        self.config_path = os.path.join(workdir, "orthanc.json")
        config = {
            "Name": "mrgan-tf-test", "StorageDirectory": self.storage, "IndexDirectory": self.storage,
            "DicomAet": ORTHANC_AET, "DicomPort": self.dicom_port, "HttpPort": self.http_port,
            "HttpServerEnabled": True, "DicomServerEnabled": True,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "SslEnabled": False,
            "DicomCheckCalledAet": True, "DicomCheckModalityHost": True,
            "DicomAlwaysAllowEcho": False, "DicomAlwaysAllowStore": False, "DicomAlwaysAllowFind": False,
            "DicomModalities": {aet.lower(): [aet, "127.0.0.1", free_port()] for aet in calling_aets},
            "Plugins": [], "StorageCompression": False, "ConcurrentJobs": 1, "HttpThreadsCount": 4,
        }
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=1)
        self.log = open(os.path.join(workdir, "orthanc.log"), "wb")
        self.proc = subprocess.Popen([self.binary, self.config_path], stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=workdir)
        self._wait_ready()

    @property
    def peer(self) -> str:
        return f"{ORTHANC_AET}@127.0.0.1:{self.dicom_port}"

    def rest(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as r:
            return json.loads(r.read())

    def _wait_ready(self) -> None:
        """Poll the REST API until it answers, the process dies, or the deadline passes."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode} at start; see {self.log.name}")
            try:
                self.rest("/system")
                if self._dicom_listening():
                    return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer on 127.0.0.1:{self.http_port} within {START_TIMEOUT_S:.0f} s")

    def _dicom_listening(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            return s.connect_ex(("127.0.0.1", self.dicom_port)) == 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.log.close()
