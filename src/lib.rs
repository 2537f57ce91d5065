//! sconce facade
