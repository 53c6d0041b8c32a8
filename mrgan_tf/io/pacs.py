"""Send DICOM series to a PACS or planning system (C-STORE), check it is there (C-ECHO, C-FIND).

    python -m mrgan_tf.pacs --peer=ORTHANC@127.0.0.1:4242 --echo
    python -m mrgan_tf.pacs --peer=ORTHANC@127.0.0.1:4242 --send=runs/syn/p01/syn_mr
    python -m mrgan_tf.pacs --peer=ORTHANC@127.0.0.1:4242 --find_series=1.2.826...

Every way a transfer can fail ends in a ``PacsError`` that says what was and
was not stored: the peer cannot be reached, it rejects the association (e.g.
an unknown called AE title), it accepts no presentation context for the
images, or it refuses single instances (their files and status codes are
listed; the others are still sent).
"""
from __future__ import annotations

import dataclasses
import logging
import re
import sys
import warnings
from pathlib import Path

from absl import app, flags

from mrgan_tf import cli
from mrgan_tf.errors import UserError

DEFAULT_CALLING_AET = "MRGAN_TF"
DEFAULT_TIMEOUT_S = 30.0
_PEER = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>\[[0-9a-fA-F:]+\]|[^:@\[\]]+):(?P<port>\d{1,5})$")


class PacsError(UserError, RuntimeError):
    """A transfer or query that did not (fully) succeed; the message says what was and was not stored."""


@dataclasses.dataclass(frozen=True)
class Peer:
    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_peer(text: str, flag: str = "--send") -> Peer:
    """``AET@host:port`` -> Peer; PacsError naming the flag and its value when malformed."""
    m = _PEER.match(str(text or "").strip())
    if not m or not (0 < int(m["port"]) < 65536) or not m["aet"].strip() or "\\" in m["aet"]:
        raise PacsError(f"{flag}={text!r}: expected AET@host:port (AE title of 1-16 characters, a port "
                        "1-65535), e.g. ORTHANC@127.0.0.1:4242")
    return Peer(m["aet"].strip(), m["host"].strip("[]"), int(m["port"]))


@dataclasses.dataclass
class StoreReport:
    """What one C-STORE run did: stored, stored with a warning status, refused, and never sent."""

    peer: Peer
    series: str
    stored: list[str] = dataclasses.field(default_factory=list)
    warnings: dict[str, str] = dataclasses.field(default_factory=dict)
    refused: dict[str, str] = dataclasses.field(default_factory=dict)
    not_sent: list[str] = dataclasses.field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.stored) + len(self.refused) + len(self.not_sent)

    @property
    def ok(self) -> bool:
        return not self.refused and not self.not_sent

    def summary(self) -> str:
        text = f"{self.peer}: stored {len(self.stored)} of {self.total} instance(s) of {self.series}"
        if self.warnings:
            text += f" ({len(self.warnings)} with a warning status: " + _listing(self.warnings) + ")"
        if self.refused:
            text += f"; refused {len(self.refused)}: " + _listing(self.refused)
        if self.not_sent:
            text += f"; not sent {len(self.not_sent)}: {_names(self.not_sent)}"
        return text


def _names(files: list[str], most: int = 5) -> str:
    names = [Path(f).name for f in files]
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _listing(reasons: dict[str, str], most: int = 5) -> str:
    items = [f"{Path(f).name} ({r})" for f, r in reasons.items()]
    return ", ".join(items[:most]) + (f" and {len(items) - most} more" if len(items) > most else "")


def _status_text(code: int) -> str:
    from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS

    category, description = STORAGE_SERVICE_CLASS_STATUS.get(code, ("Unknown", "status not in the standard"))
    return f"status 0x{code:04X} {category}: {description}".rstrip(": ")


def _dicom_files(series) -> list[Path]:
    """The files to send: one file, or every file directly in a folder (sorted by name)."""
    series = Path(series)
    if series.is_file():
        return [series]
    if not series.is_dir():
        raise PacsError(f"{series}: no such file or folder; nothing was sent")
    files = sorted(p for p in series.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise PacsError(f"{series}: folder holds no files; nothing was sent")
    return files


def _read(files: list[Path]):
    import pydicom
    from pydicom.errors import InvalidDicomError

    datasets = []
    for f in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                datasets.append(pydicom.dcmread(f))
        except (InvalidDicomError, OSError, EOFError, ValueError) as e:
            raise PacsError(f"{f}: not a readable DICOM file ({e}); nothing was sent") from e
    return datasets


def _associate(peer: Peer, contexts, calling_aet: str, timeout_s: float, what: str):
    """An established association, or PacsError saying why not (unreachable, rejected, no context)."""
    from pynetdicom import AE, evt
    from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ

    quiet = logging.getLogger("pynetdicom")
    if quiet.level == logging.NOTSET:   # its log lines repeat what PacsError says; a caller's setting wins
        quiet.setLevel(logging.CRITICAL)
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.connection_timeout = timeout_s
    for sop_class, syntaxes in contexts:
        ae.add_requested_context(sop_class, syntaxes)
    # What the peer sent, as the transport decoded it. Not the ACSE's view: when the peer rejects and
    # closes at once, pynetdicom (3.0) can see the closed socket before reading the rejection and call
    # the association aborted; the rejection PDU has still arrived, and it says why.
    received = []
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title,
                         evt_handlers=[(evt.EVT_PDU_RECV, lambda event: received.append(event.pdu))])
    if assoc.is_established:
        return assoc
    rj = next((p for p in received if isinstance(p, A_ASSOCIATE_RJ)), None)
    if assoc.is_rejected or rj is not None:
        why = f"{rj.result_str}, {rj.source_str}: {rj.reason_str}" if rj is not None else "no reason given"
        raise PacsError(f"{peer}: association rejected ({why}); {what}")
    if any(isinstance(p, A_ASSOCIATE_AC) for p in received):
        raise PacsError(f"{peer}: the peer accepted none of the requested SOP classes / transfer syntaxes "
                        f"({', '.join(sorted({str(c[0]) for c in contexts}))}); {what}")
    raise PacsError(f"{peer}: cannot reach the peer (connection refused, no DICOM service there, or no "
                    f"answer within {timeout_s:g} s); {what}")


def echo(peer: Peer, calling_aet: str = DEFAULT_CALLING_AET, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """C-ECHO: PacsError unless the peer answers with Success."""
    from pydicom.uid import ImplicitVRLittleEndian
    from pynetdicom.sop_class import Verification

    assoc = _associate(peer, [(Verification, [ImplicitVRLittleEndian])], calling_aet, timeout_s, "echo failed")
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    code = int(status.Status) if status and "Status" in status else None
    if code != 0x0000:
        raise PacsError(f"{peer}: C-ECHO failed ({'no answer' if code is None else f'status 0x{code:04X}'})")


def store_series(series, peer: Peer, calling_aet: str = DEFAULT_CALLING_AET,
                 timeout_s: float = DEFAULT_TIMEOUT_S, progress: bool = False) -> StoreReport:
    """C-STORE every file of ``series`` (a folder or one file) on one association.

    Returns the report when every instance was stored (warning statuses
    included); raises PacsError with the report's summary otherwise.
    """
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from tqdm import tqdm

    files = _dicom_files(series)
    datasets = _read(files)
    label = ", ".join(sorted({f"series {ds.get('SeriesInstanceUID', '?')}" for ds in datasets}))
    report = StoreReport(peer, f"{label} ({series})", not_sent=[str(f) for f in files])
    contexts = {}
    for ds in datasets:
        syntax = ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)
        contexts.setdefault(str(ds.SOPClassUID), {syntax, ExplicitVRLittleEndian, ImplicitVRLittleEndian})
    assoc = _associate(peer, [(c, sorted(s)) for c, s in contexts.items()], calling_aet, timeout_s,
                       f"nothing was stored (0 of {len(files)} instances of {report.series})")
    try:
        for f, ds in tqdm(list(zip(files, datasets)), desc=f"C-STORE to {peer.ae_title}", unit="instance",
                          disable=not progress, leave=False):
            if not assoc.is_established:
                break
            try:
                status = assoc.send_c_store(ds)
            except (ValueError, RuntimeError) as e:   # no accepted context for this instance, or a dead link
                report.not_sent.remove(str(f))
                report.refused[str(f)] = str(e).splitlines()[0]
                continue
            report.not_sent.remove(str(f))
            code = int(status.Status) if status and "Status" in status else None
            if code is None:
                report.refused[str(f)] = "no response (association aborted or timed out)"
            elif code == 0x0000:
                report.stored.append(str(f))
            elif code in (0x0107, 0x0116) or 0xB000 <= code <= 0xBFFF:   # stored, with a warning
                report.stored.append(str(f))
                report.warnings[str(f)] = _status_text(code)
            else:
                report.refused[str(f)] = _status_text(code)
    finally:
        if assoc.is_established:
            assoc.release()
    if not report.ok:
        raise PacsError(report.summary())
    return report


def find_series(peer: Peer, series_uid: str, study_uid: str | None = None, calling_aet: str = DEFAULT_CALLING_AET,
                timeout_s: float = DEFAULT_TIMEOUT_S) -> list[dict]:
    """C-FIND at SERIES level (Study Root): what the peer holds for ``series_uid``.

    Returns one dict per match with the UIDs, modality, description and
    NumberOfSeriesRelatedInstances (None when the peer does not say).
    """
    import pydicom
    from pydicom.uid import ImplicitVRLittleEndian
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

    query = pydicom.Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = study_uid or ""
    query.SeriesInstanceUID = series_uid
    for kw in ("Modality", "SeriesDescription", "SeriesNumber", "NumberOfSeriesRelatedInstances"):
        setattr(query, kw, None)
    assoc = _associate(peer, [(FIND, [ImplicitVRLittleEndian])], calling_aet, timeout_s, "query not made")
    found, failure = [], None
    try:
        for status, identifier in assoc.send_c_find(query, FIND):
            code = int(status.Status) if status and "Status" in status else None
            if code in (0xFF00, 0xFF01) and identifier is not None:
                n = identifier.get("NumberOfSeriesRelatedInstances")
                found.append({"StudyInstanceUID": str(identifier.get("StudyInstanceUID", "")),
                              "SeriesInstanceUID": str(identifier.get("SeriesInstanceUID", "")),
                              "Modality": str(identifier.get("Modality", "")),
                              "SeriesDescription": str(identifier.get("SeriesDescription", "")),
                              "NumberOfSeriesRelatedInstances": int(n) if n not in (None, "") else None})
            elif code != 0x0000:
                failure = "no response" if code is None else f"status 0x{code:04X}"
    finally:
        if assoc.is_established:
            assoc.release()
    if failure:
        raise PacsError(f"{peer}: C-FIND for series {series_uid} failed ({failure})")
    return found


# --------------------------------------------------------------------------- CLI


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """CLI flags, defined only when run as a program (importers' flags never collide)."""
    flags.DEFINE_string("peer", None, "The PACS: AET@host:port (its AE title, host and DICOM port).", flag_values=fv)
    flags.DEFINE_multi_string("send", [], "A DICOM series folder (or file) to C-STORE; repeatable.", flag_values=fv)
    flags.DEFINE_bool("echo", False, "C-ECHO the peer first.", flag_values=fv)
    flags.DEFINE_string("find_series", None, "C-FIND this SeriesInstanceUID and print what the peer holds.",
                        flag_values=fv)
    flags.DEFINE_string("calling_aet", DEFAULT_CALLING_AET, "Our AE title.", flag_values=fv)
    flags.DEFINE_float("timeout_s", DEFAULT_TIMEOUT_S, "Connection, association and message timeout.",
                       lower_bound=0.1, flag_values=fv)
    flags.DEFINE_bool("progress", True, "Show a progress bar while sending.", flag_values=fv)


def main(argv):
    fv = flags.FLAGS
    if not fv.peer:
        raise app.UsageError("--peer=AET@host:port is required")
    if not (fv.echo or fv.send or fv.find_series):
        raise app.UsageError("nothing to do: give --echo, --send=FOLDER or --find_series=UID")
    failed = False
    with cli.user_errors("pacs"):
        peer = parse_peer(fv.peer, "--peer")
        if fv.echo:
            echo(peer, fv.calling_aet, fv.timeout_s)
            print(f"{peer}: C-ECHO ok")
        for series in fv.send:
            try:   # one series that fails does not stop the others
                print(store_series(series, peer, fv.calling_aet, fv.timeout_s, fv.progress).summary())
            except PacsError as e:
                print(f"pacs: error: {e}", file=sys.stderr)
                failed = True
        if fv.find_series:
            matches = find_series(peer, fv.find_series, calling_aet=fv.calling_aet, timeout_s=fv.timeout_s)
            for m in matches:
                print(f"{peer}: series {m['SeriesInstanceUID']} ({m['Modality']}, {m['SeriesDescription']!r}): "
                      f"{m['NumberOfSeriesRelatedInstances']} instance(s) in study {m['StudyInstanceUID']}")
            if not matches:
                print(f"pacs: error: {peer}: holds no series {fv.find_series}", file=sys.stderr)
                failed = True
    return 1 if failed else 0


run = cli.entry_point(define_flags, main)
