"""Expect on HTTP/1.0 is ignored (RFC 9110 10.1.1)"""

request = {'expect_continue': False}
