"""The VMI admission webhook process (`kvtune webhook`): its kopf indexes (`handlers`), the HTTPS
server (`server`), the answers from the indexes (`admission`), what the apiserver is told about
it (`configuration`, `pki`), and the pure judgement of one VMI against one profile (`vmi/`)."""
