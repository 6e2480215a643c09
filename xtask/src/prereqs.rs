//! Installs what the tests and the demo need on a fresh machine.
