"""A member card printed at the window with the member's photo (S15), on real components: the real server,
``parkgate pos member print`` as a subprocess, the PDF parsed with pypdf, the thermal printer on a socat pty.

The photo is read over the contract (GetMemberPhoto, members.personal): an operator without that
permission gets PERMISSION_DENIED and no card; one with it gets a PDF whose page embeds the photo the
server keeps, and the ESC/POS bytes carry it as a raster image.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image
from pypdf import PdfReader

from parkgate.v1 import admin_pb2, sales_pb2
from tests.fixtures.serial import PtyPair

from .conftest import PARK, Catalogue, jpeg
from .test_pos_commands import pos


def _pdf_images(path: Path) -> list[tuple[int, int, str]]:
    """(width, height, filter) of every image XObject on the PDF's pages."""
    found = []
    for page in PdfReader(path).pages:
        xobjects = page["/Resources"].get("/XObject") or {}
        for ref in xobjects.values():
            obj = ref.get_object()
            if obj.get("/Subtype") == "/Image":
                found.append((int(obj["/Width"]), int(obj["/Height"]), str(obj.get("/Filter"))))
    return found


async def test_a_member_card_prints_with_the_photo_only_for_operators_allowed_to_read_it(
        cat: Catalogue, tmp_path: Path, make_pty_pair: Callable[[], PtyPair]) -> None:
    clerk_env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "clerk"), "PARKGATE_DEVICE_SECRET": cat.window_secret,
                 "COLUMNS": "200"}
    await pos(cat, clerk_env, "login", "--user", "clerk", "--device", f"{PARK}-window2", "--password-stdin",
              stdin="clerk-password-1\n")
    photo = tmp_path / "face.jpg"
    photo.write_bytes(jpeg(800, 1000))
    await pos(cat, clerk_env, "member", "register", "--product", "member", "--name", "Zhou Lan", "--card",
              "04E6000001", "--photo", str(photo))
    # the clerk may register members but not read their photos: no card comes out
    err = await pos(cat, clerk_env, "member", "print", "--card", "04E6000001", "--out", str(tmp_path / "denied"),
                    ok=False)
    assert "PERMISSION_DENIED" in err
    assert not (tmp_path / "denied" / "member-04E6000001.pdf").exists()

    md = cat.admin.metadata
    await cat.admin.admin.PutRole(admin_pb2.PutRoleRequest(role=admin_pb2.Role(
        name="desk", description="member desk", permissions=["sales.read", "sales.members", "members.personal",
                                                             "catalog.read"])), metadata=md)
    await cat.admin.admin.CreateUser(admin_pb2.CreateUserRequest(
        username="desk", password="desk-password-1", roles=["desk"]), metadata=md)
    desk_env = {**clerk_env, "XDG_CONFIG_HOME": str(tmp_path / "desk")}
    await pos(cat, desk_env, "login", "--user", "desk", "--device", f"{PARK}-window2", "--password-stdin",
              stdin="desk-password-1\n")
    printer = make_pty_pair()
    far = printer.open_far(timeout=0.5)
    out = await pos(cat, desk_env, "member", "print", "--card", "04e6000001", "--out", str(tmp_path / "cards"),
                    "--printer", printer.device)
    assert "member-04E6000001.pdf" in out

    found = await cat.admin.sales.FindMembers(sales_pb2.FindMembersRequest(card_uid="04E6000001"), metadata=md)
    kept = await cat.admin.sales.GetMemberPhoto(sales_pb2.GetMemberPhotoRequest(member_id=found.members[0].id),
                                                metadata=md)
    with Image.open(io.BytesIO(kept.jpeg)) as img:
        kept_size = img.size
    pdf = tmp_path / "cards" / "member-04E6000001.pdf"
    text = "".join(page.extract_text() for page in PdfReader(pdf).pages)
    assert "Zhou Lan" in text and "04E6000001" in text
    assert _pdf_images(pdf) == [(*kept_size, "/DCTDecode")]  # the server's photo, embedded as its JPEG

    # the thermal printer got the card with the photo as a GS v 0 raster, 192 dots (24 bytes) wide
    received = b""
    deadline = time.monotonic() + 20
    while not received.endswith(b"\x1dV\x42\x03") and time.monotonic() < deadline:
        received += far.read(4096)
    far.close()
    assert b"Zhou Lan" in received and received.endswith(b"\x1dV\x42\x03")
    at = received.index(b"\x1dv0\x00")
    width_bytes = received[at + 4] | received[at + 5] << 8
    height = received[at + 6] | received[at + 7] << 8
    assert width_bytes == 24 and height == round(kept_size[1] * 192 / kept_size[0])
    raster = received[at + 8:at + 8 + width_bytes * height]
    assert len(raster) == width_bytes * height and any(raster)  # a real picture, not blank paper
