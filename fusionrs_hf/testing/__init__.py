"""Test servers that speak real protocols on 127.0.0.1: a Hub-API server (:mod:`.hub_server`) and an S3 server
(:mod:`.s3_server`, moto). Used by the tests and by the remote-streaming benchmarks; nothing here is imported by
the library itself."""
