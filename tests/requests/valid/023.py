"""empty Host on HTTP/1.1 (RFC 9110 7.2: no authority)"""

request = {'host': b''}
