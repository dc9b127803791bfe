/*  placeholder until the module's tests land.                                                */
#include "testutil.h"

int main(void)
{
    return vs_test_summary();
}
