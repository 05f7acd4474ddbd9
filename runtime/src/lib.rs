//! FlowMesh runtime.
