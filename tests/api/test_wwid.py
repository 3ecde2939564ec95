"""World wide ids: every spelling of one LUN's id has one canonical form, and only it."""

from __future__ import annotations

import pytest
from kvtune_api.wwid import canonical_wwid

NAA = "600a098038303053453f463045535a31"
T10 = "t10.ata_samsung_mz7lh960_s45nna0m1"


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        pytest.param(f"naa.{NAA}", NAA, id="sysfs device/wwid"),
        pytest.param(f"3{NAA}", NAA, id="scsi_id and multipath: NAA type digit 3"),
        pytest.param(f"0x{NAA.upper()}", NAA, id="udev ID_WWN, any case"),
        pytest.param(f"wwn-0x{NAA}", NAA, id="a by-id wwn- name"),
        pytest.param(f"  NAA.{NAA}\n", NAA, id="blanks and case"),
        pytest.param(NAA, NAA, id="bare, as a selector may give it"),
        pytest.param("35000c500a1b2c3d4", "5000c500a1b2c3d4", id="an 8-byte NAA from scsi_id"),
        pytest.param("eui.0025388B91B2C3D4", "0025388b91b2c3d4", id="EUI-64 from sysfs"),
        pytest.param("20025388b91b2c3d4", "0025388b91b2c3d4", id="EUI-64: type digit 2"),
        pytest.param("wwn-eui.0025388b91b2c3d4", "0025388b91b2c3d4", id="an NVMe wwn- name"),
        pytest.param("t10.ATA     SAMSUNG MZ7LH960      S45NNA0M1", T10,
                     id="T10 from sysfs keeps its blanks"),
        pytest.param("1ATA_SAMSUNG_MZ7LH960_S45NNA0M1", T10,
                     id="T10 from scsi_id --replace-whitespace: type digit 1"),
        pytest.param(f"8naa.{NAA}", NAA, id="a SCSI name string: type digit 8"),
        pytest.param("uuid.1F2E3D4C-0000-0000-0000-000000000001",
                     "uuid.1f2e3d4c-0000-0000-0000-000000000001", id="other forms: lower case"),
    ],
)
def test_every_spelling_of_an_id_has_one_canonical_form(spelling: str, canonical: str) -> None:
    assert canonical_wwid(spelling) == canonical


def test_distinct_ids_stay_distinct() -> None:
    ids = [f"naa.{NAA}", "naa.600a098038303053453f463045535a32", "eui.0025388b91b2c3d4",
           "t10.ATA SAMSUNG S1", "t10.ATA SAMSUNG S2", "3" + "5000c500a1b2c3d4"]
    assert len({canonical_wwid(i) for i in ids}) == len(ids)
