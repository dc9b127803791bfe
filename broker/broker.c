/*  broker.c - placeholder until the module lands.                                              */
#include "vs_broker.h"

void vs_broker_actor(zsock_t *pipe, void *args)
{
    (void) args;
    zsock_signal(pipe, 0);
    zstr_sendm(pipe, "ERROR");
    zstr_send(pipe, "not built yet");
}
