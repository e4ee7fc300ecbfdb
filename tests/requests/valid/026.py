"""a head exactly max_head long"""

limits = {'max_head': 37}
request = {}
