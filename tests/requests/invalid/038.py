"""Transfer-Encoding: gzip, chunked (unsupported coding)"""

status = 501
