"""exactly max_headers fields"""

limits = {'max_headers': 3}
request = {'headers': [(b'Host', b'example.com'), (b'A', b'1'), (b'B', b'2')]}
