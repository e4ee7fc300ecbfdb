"""an unknown expectation"""

status = 417
h11_differs = 'expect-unknown'
