"""Binding code per contract family (installed as driftcheck.shims): each shim module binds
one hook point on the contracts it HANDLES; plan.py chooses them by the fingerprint,
install.py applies them all or nothing, hook_points.py is what subscribers see."""
