//! Backends observe live state and carry out plan operations: LIO (configfs) and the
//! userspace engine.
