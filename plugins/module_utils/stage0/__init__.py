"""stage0: the appc.rocket runtime library.

Plain Python (>= 3.8, standard library on every path that can do without more); it never
imports ansible, so it is usable on its own and cheap to import on a target host.
"""
