//! IO drivers (filled in by the driver work).
