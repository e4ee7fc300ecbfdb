"""absolute-form: the authority is the host, the path is sent on"""

request = {'host': b'Backend.example:8080',
 'path': b'/p/q?x=1',
 'target': b'http://Backend.example:8080/p/q?x=1',
 'target_form': 'absolute'}
