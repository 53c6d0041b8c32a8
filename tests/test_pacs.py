"""Sending to a PACS end to end: a real Orthanc on 127.0.0.1, and a refusing peer made with pynetdicom."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pydicom
import pytest
from orthanc_server import Orthanc, free_port

from mrgan_tf.io import pacs
from mrgan_tf.io.dicom_write import SeriesInfo, write_dicom_series
from mrgan_tf.io.volumes import Volume

# No test waits for this to elapse (refusals come back at once); it only has to outlast a
# loaded machine, where Orthanc's answer took more than 5 s.
PEER_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    server = Orthanc(str(tmp_path_factory.mktemp("orthanc")))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    out = tmp_path_factory.mktemp("series") / "syn_ct"
    vol = Volume(np.random.default_rng(4).uniform(-1000, 1500, (8, 9, 5)).astype(np.float32), np.eye(4))
    info = write_dicom_series(vol, out, "CT", SeriesInfo(patient_id="pacs01"))
    return out, info


def test_parse_peer():
    assert pacs.parse_peer("ORTHANC@127.0.0.1:4242") == pacs.Peer("ORTHANC", "127.0.0.1", 4242)
    assert pacs.parse_peer("A B@[::1]:104") == pacs.Peer("A B", "::1", 104)
    for bad in ("ORTHANC@127.0.0.1", "127.0.0.1:4242", "X@h:0", "X@h:70000", "AETITLEMORETHAN16@h:1", ""):
        with pytest.raises(pacs.PacsError, match="expected AET@host:port"):
            pacs.parse_peer(bad)


def test_store_to_orthanc_and_query_back(orthanc, series):
    folder, info = series
    peer = pacs.parse_peer(orthanc.peer)
    pacs.echo(peer)
    report = pacs.store_series(folder, peer)
    assert report.ok and len(report.stored) == 5 and "stored 5 of 5" in report.summary()

    found = pacs.find_series(peer, info["series_instance_uid"])
    assert [(f["SeriesInstanceUID"], f["StudyInstanceUID"], f["NumberOfSeriesRelatedInstances"], f["Modality"])
            for f in found] == [(info["series_instance_uid"], info["study_instance_uid"], 5, "CT")]

    # The REST API sees the same series, with every SOP instance we wrote.
    (orthanc_id,) = [s for s in orthanc.rest("/series")
                     if orthanc.rest(f"/series/{s}")["MainDicomTags"]["SeriesInstanceUID"] == info["series_instance_uid"]]
    instances = orthanc.rest(f"/series/{orthanc_id}/instances")
    sent = {str(pydicom.dcmread(f).SOPInstanceUID) for f in folder.iterdir()}
    assert {i["MainDicomTags"]["SOPInstanceUID"] for i in instances} == sent
    tags = orthanc.rest(f"/instances/{instances[0]['ID']}/simplified-tags")
    assert tags["FrameOfReferenceUID"] == info["frame_of_reference_uid"] and tags["PatientID"] == "pacs01"


def test_unreachable_peer_says_nothing_was_stored(series):
    folder, _ = series
    with pytest.raises(pacs.PacsError) as err:
        pacs.store_series(folder, pacs.Peer("NOBODY", "127.0.0.1", free_port()), timeout_s=PEER_TIMEOUT_S)
    assert "cannot reach the peer" in str(err.value) and "nothing was stored (0 of 5 instances" in str(err.value)


def test_rejected_association_says_why_and_that_nothing_was_stored(orthanc, series):
    folder, _ = series
    with pytest.raises(pacs.PacsError) as err:
        pacs.store_series(folder, pacs.Peer("NOT_ORTHANC", "127.0.0.1", orthanc.dicom_port),
                          timeout_s=PEER_TIMEOUT_S)
    assert "association rejected" in str(err.value) and "Called AE title not recognised" in str(err.value)
    assert "nothing was stored (0 of 5" in str(err.value)
    with pytest.raises(pacs.PacsError, match="Calling AE title not recognised"):
        pacs.store_series(folder, pacs.parse_peer(orthanc.peer), calling_aet="STRANGER", timeout_s=PEER_TIMEOUT_S)


def test_rejection_is_reported_even_when_the_peer_closes_before_we_look(orthanc, series, monkeypatch):
    """Orthanc rejects and closes at once; on a loaded machine pynetdicom saw the closed socket first
    and called it an abort (7.8 % of 1000 tries under 3 busy loops). Hold our side after the request
    so that this order always happens: the rejection must still be named."""
    import time

    from pynetdicom.acse import ACSE

    send_request = ACSE.send_request

    def send_then_stall(self):
        send_request(self)
        time.sleep(0.5)

    monkeypatch.setattr(ACSE, "send_request", send_then_stall)
    folder, _ = series
    with pytest.raises(pacs.PacsError) as err:
        pacs.store_series(folder, pacs.Peer("NOT_ORTHANC", "127.0.0.1", orthanc.dicom_port),
                          timeout_s=PEER_TIMEOUT_S)
    assert "association rejected" in str(err.value) and "Called AE title not recognised" in str(err.value)


@pytest.fixture()
def refusing_scp():
    """A storage SCP on 127.0.0.1 that refuses the instance numbered 3 (0xA700, out of resources)."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    received = []

    def on_store(event):
        ds = event.dataset
        if int(ds.InstanceNumber) == 3:
            return 0xA700
        received.append(str(ds.SOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="REFUSER")
    ae.supported_contexts = AllStoragePresentationContexts
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    yield pacs.Peer("REFUSER", "127.0.0.1", port), received
    server.shutdown()


def test_refused_instance_is_named_and_the_rest_are_still_stored(refusing_scp, series):
    peer, received = refusing_scp
    folder, _ = series
    with pytest.raises(pacs.PacsError) as err:
        pacs.store_series(folder, peer, timeout_s=PEER_TIMEOUT_S)
    msg = str(err.value)
    assert "stored 4 of 5" in msg and "refused 1: CT00003.dcm (status 0xA700" in msg
    assert len(received) == 4


def test_peer_without_storage_contexts_says_nothing_was_stored(series):
    """A peer that accepts the association but none of the image SOP classes (echo only)."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="ECHOONLY")
    ae.add_supported_context(Verification)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False)
    try:
        peer = pacs.Peer("ECHOONLY", "127.0.0.1", port)
        pacs.echo(peer, timeout_s=PEER_TIMEOUT_S)
        with pytest.raises(pacs.PacsError) as err:
            pacs.store_series(series[0], peer, timeout_s=PEER_TIMEOUT_S)
    finally:
        server.shutdown()
    assert "accepted none of the requested SOP classes" in str(err.value)
    assert "1.2.840.10008.5.1.4.1.1.2" in str(err.value) and "nothing was stored (0 of 5" in str(err.value)


def test_cli_echo_send_find_and_failure(orthanc, series, tmp_path):
    folder, info = series
    cmd = [sys.executable, "-m", "mrgan_tf.pacs", f"--peer={orthanc.peer}"]
    ok = subprocess.run(cmd + ["--echo", f"--send={folder}", f"--find_series={info['series_instance_uid']}"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "C-ECHO ok" in ok.stdout and "stored 5 of 5" in ok.stdout and "5 instance(s)" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "mrgan_tf.pacs", f"--peer=NOBODY@127.0.0.1:{free_port()}",
                          f"--send={folder}", f"--timeout_s={PEER_TIMEOUT_S:g}"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "pacs: error: NOBODY@127.0.0.1" in bad.stderr
    assert "nothing was stored" in bad.stderr
    missing = subprocess.run(cmd + [f"--send={tmp_path / 'nope'}"], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and f"{tmp_path / 'nope'}: no such file or folder" in missing.stderr
