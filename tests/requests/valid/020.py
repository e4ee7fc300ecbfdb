"""method names are case-sensitive: get is an extension method"""

request = {'method': b'get'}
