"""kvtune's control-plane side: the profile controller and the VMI admission webhook."""
