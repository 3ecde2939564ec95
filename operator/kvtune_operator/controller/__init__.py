"""The operator process (`kvtune operator`): its kopf handlers (`handlers`), one reconcile pass
of a profile (`passes`), the pure planners and roll-up it runs, and its API writes (`kube`)."""
