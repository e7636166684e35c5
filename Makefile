# The two commands of the README. Both install what is missing and build first.
BUILD ?= build
JOBS ?= $(shell nproc)

.PHONY: run test build setup clean

setup:
	bash scripts/setup.sh

build: setup
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build $(BUILD) -j $(JOBS)

run: build
	./$(BUILD)/bin/kiln devices
	./$(BUILD)/bin/kiln demo

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

clean:
	rm -rf $(BUILD)
