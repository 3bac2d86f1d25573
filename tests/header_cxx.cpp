// Compiles the public header as C++ and checks that the C linkage works from C++.
#include <clbn.h>
#include <cstring>

int main() {
    clbn_bn_options o;
    clbn_bn_options_init(&o);
    if (o.flags != CLBN_BN_FLAGS_DEFAULT)
        return 1;
    return std::strcmp(clbn_status_name(CLBN_ERROR_INVALID_SHAPE), "CLBN_ERROR_INVALID_SHAPE") ? 1 : 0;
}
