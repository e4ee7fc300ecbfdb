"""extension method and a lower-case method are tokens"""

request = {'method': b'PROPFIND'}
