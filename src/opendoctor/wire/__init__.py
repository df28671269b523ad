"""Wire formats shared with hosts and guests, standard library only: the host probe's
datagrams (`probe`) and the guest heartbeat protocol (`heartbeat`). Lab hosts, guest
agents and the service all import them, so they must load fast and depend on nothing."""
