"""a target exactly max_target long"""

limits = {'max_target': 16}
request = {}
