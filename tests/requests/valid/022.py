"""Host as an IPv6 literal with a port"""

request = {'host': b'[::1]:8080'}
