// The helpers every test target shares (repository paths, scratch directories, the relaxft binary).
@_exported import TestSupport
