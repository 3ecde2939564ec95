"""The SR-IOV VM sample (deploy/samples/sriov-vm/) works with the profile sample it goes with:
its NetworkAttachmentDefinition asks for the resource the profile's rule offers, and its VMI
passes kvtune's webhook (dedicatedNetworking: Require) and KubeVirt's own admission."""

from __future__ import annotations

import pathlib

import yaml
from kvtune_api.v1alpha1.profile import SRIOV_RESOURCE_PREFIX
from kvtune_operator.common.profiles import Profile
from kvtune_operator.webhook.vmi import KubeVirtConfig
from support.kubevirt_oracle import Oracle, admission_chain

SAMPLES = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "samples"
PROFILE = yaml.safe_load((SAMPLES / "sriov-luns.yaml").read_text())
NAD = yaml.safe_load((SAMPLES / "sriov-vm" / "network-attachment-definition.yaml").read_text())
VMI = yaml.safe_load((SAMPLES / "sriov-vm" / "vmi.yaml").read_text())
#: KubeVirt as the sample profile needs it: dedicated CPUs run only with the CPUManager gate.
CONFIG = KubeVirtConfig(feature_gates=frozenset({"CPUManager"}))


def test_the_network_asks_for_the_resource_the_profile_offers() -> None:
    offered = {f"{SRIOV_RESOURCE_PREFIX}/{rule['resourceName']}"
               for rule in PROFILE["spec"]["network"]["sriov"] if "resourceName" in rule}

    assert NAD["metadata"]["annotations"]["k8s.v1.cni.cncf.io/resourceName"] in offered
    [network] = [n for n in VMI["spec"]["networks"] if "multus" in n]
    assert network["multus"]["networkName"] == NAD["metadata"]["name"]
    assert NAD["metadata"]["namespace"] == VMI["metadata"]["namespace"]


def test_the_vmi_passes_kvtunes_webhook_and_kubevirts_admission(kubevirt_oracle: Oracle) -> None:
    profile = Profile.from_body({**PROFILE, "metadata": {**PROFILE["metadata"], "uid": "u"}})
    labels = PROFILE["spec"]["vmi"]["namespaceSelector"]["matchLabels"]

    outcome = admission_chain(kubevirt_oracle, profile, VMI, CONFIG, namespace_labels=labels)

    assert outcome.refused_by is None, outcome.reasons
    assert outcome.stored is not None
    interfaces = outcome.stored["spec"]["domain"]["devices"]["interfaces"]
    assert {"name": "data", "sriov": {}} in interfaces
