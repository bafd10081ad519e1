//! Edge policies end to end: cors, ip-filter, request-size-limit.
