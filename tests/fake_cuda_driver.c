/*
 * fake_cuda_driver.c: an empty libcuda.so.1, so a machine without a GPU can
 * run the CUDA loader's driver-present paths (tests/CMakeLists.txt runs
 * test_cuda_loader with it on LD_LIBRARY_PATH). The CUDA runtime finds none
 * of the driver's entry points in it and reports no usable device.
 */
int lomo_fake_cuda_driver(void);
int lomo_fake_cuda_driver(void) { return 0; }
